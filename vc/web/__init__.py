"""The web front end: one WSGI application (:mod:`vc.web.app`) served three ways.

- Apache CGI: ``cgi-bin/vc.cgi``, a three-line :class:`wsgiref.handlers.CGIHandler` wrapper;
- mod_wsgi: :mod:`vc.web.wsgi` (``application``);
- a local development server: ``python -m vc.web.devserver``.

The web process only reads and writes the database through :mod:`vc.reservations` and the small
helpers here; it never runs libvirt or SSH, except the explicit "test connection" of the iSCSI
target page (:mod:`vc.web.testconn`, through :mod:`vc.remote`, the one paramiko user).
Modules are imported by the page that needs them: under CGI every import is paid per request.
"""
