"""`{% result_count cl %}`: "1 backup", "26 backups", "4 entries", with the language's plural rule.

Django's pagination line picks verbose_name or verbose_name_plural by `count == 1`, which is wrong
for some languages and reads badly where the plural name is a collective ("4 audit log"). A model
admin may define `result_count_label(count) -> str` (an ngettext) to say what it counts.
"""
from django import template
from django.utils.translation import ngettext

register = template.Library()


@register.simple_tag
def result_count(cl) -> str:
    label = getattr(cl.model_admin, "result_count_label", None)
    if label is not None:
        return label(cl.result_count)
    opts = cl.opts
    # The names are lazy translations of the active language; the language's plural rule picks the
    # form. Each form names only its own variable, hence no python-format check of the pair.
    # xgettext:no-python-format
    return ngettext("%(count)d %(singular)s", "%(count)d %(plural)s", cl.result_count) % {
        "count": cl.result_count, "singular": opts.verbose_name, "plural": opts.verbose_name_plural,
    }
