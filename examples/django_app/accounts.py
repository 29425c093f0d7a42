"""The demo's accounts: ordinary users (no staff, no admin) whose passwords are printed
on the home page. Created by the data migration; the admin needs ``createsuperuser``."""

from __future__ import annotations

DEMO_USERS = {"alice": "alice-demo-password", "bob": "bob-demo-password"}
