#!/usr/bin/env python3
# The VC web pages (front controller for every URL under /vc/); tools/web.sh installs it with the venv's python.
from wsgiref.handlers import CGIHandler
from vc.web.app import application
CGIHandler().run(application)
