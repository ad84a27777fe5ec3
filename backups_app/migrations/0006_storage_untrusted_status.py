# Storage is untrusted (issue 10, item 6): records rebuilt from unsigned manifests.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('backups_app', '0005_dirty_mark_no_lock_row'),
    ]

    operations = [
        migrations.AlterField(
            model_name='backuprecord',
            name='status',
            field=models.CharField(choices=[('queued', 'queued'), ('running', 'running'), ('success', 'success'), ('failed', 'failed'), ('interrupted', 'interrupted'), ('cancelled', 'cancelled'), ('untrusted', 'untrusted (unsigned manifest)')], db_index=True, default='queued', max_length=20, verbose_name='status'),
        ),
    ]
