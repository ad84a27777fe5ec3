"""ensure_staff: the first superuser of a fresh install, its password in an owner-only file."""
import os

import pytest
from django.contrib.auth import authenticate, get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

pytestmark = pytest.mark.django_db


def test_writes_the_password_where_it_is_told_and_it_logs_in(tmp_path):
    password_file = tmp_path / "first" / "password"
    call_command("ensure_staff", "--password-file", str(password_file), stdout=open(os.devnull, "w"))
    assert password_file.stat().st_mode & 0o777 == 0o600
    assert authenticate(username="admin", password=password_file.read_text().strip()) is not None


def test_a_project_without_var_dir_gets_the_file_under_its_base_dir(settings, tmp_path):
    del settings.VAR_DIR
    settings.BASE_DIR = tmp_path
    call_command("ensure_staff", stdout=open(os.devnull, "w"))
    password_file = tmp_path / "var" / "initial_admin_password"
    assert password_file.stat().st_mode & 0o777 == 0o600
    assert authenticate(username="admin", password=password_file.read_text().strip()) is not None


def test_an_existing_readable_file_becomes_owner_only(tmp_path):
    password_file = tmp_path / "initial_admin_password"
    password_file.write_text("stale\n")
    password_file.chmod(0o644)
    with override_settings(VAR_DIR=tmp_path):
        call_command("ensure_staff", stdout=open(os.devnull, "w"))
    assert password_file.stat().st_mode & 0o777 == 0o600
    assert password_file.read_text().strip() != "stale"


def test_a_symlink_in_place_of_the_file_is_not_followed(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text("")
    (tmp_path / "initial_admin_password").symlink_to(target)
    with override_settings(VAR_DIR=tmp_path), pytest.raises(CommandError, match="Cannot write the password file"):
        call_command("ensure_staff", stdout=open(os.devnull, "w"))
    assert target.read_text() == ""
    assert not get_user_model().objects.filter(is_superuser=True).exists()
