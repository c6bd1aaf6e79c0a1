"""Settings of the site benchmarks/django_workload.py runs under gunicorn: one alias on
the lab (its primary and replicas, described by REPLPOOL_WORKLOAD_DB as JSON) with
ReadYourWritesMiddleware."""

import json
import os

SECRET_KEY = "workload-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
ROOT_URLCONF = "workload_site.urls"
INSTALLED_APPS: list[str] = []
MIDDLEWARE = ["replpool.django.middleware.ReadYourWritesMiddleware"]
DATABASES = {"default": json.loads(os.environ["REPLPOOL_WORKLOAD_DB"])}
