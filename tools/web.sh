#!/bin/bash
# tools/web.sh — the project's own Apache serving the VC pages (`make demo`, the browser tests,
# bench/web.py).
#
#   tools/web.sh start     install apache2 if missing, prepare the state dir, write
#                          $VC_VAR/apache/httpd.conf and start Apache on 127.0.0.1:PORT
#   tools/web.sh stop      stop it, by its pid file
#   tools/web.sh status
#   tools/web.sh users     the demo's users (VC_WEB_USERS, default "alice bob carol"; [site] admins
#                          says who is an admin): with [web] auth = pam real local accounts
#                          (useradd), with htpasswd entries of the password file; passwords
#                          generated once into $VC_VAR/web-users/NAME.password (mode 600);
#                          prints name, role and password
#   tools/web.sh remove-users   remove those accounts / entries again (only accounts this script
#                          made: their GECOS field says so) and their password files
#
# Environment:
#   VC_CONFIG       the configuration file (default $VC_VAR/vc.conf); passed to the pages by SetEnv
#   VC_VAR          where everything lives (default <checkout>/var); the config is under
#                   $VC_VAR/apache/: httpd.conf, logs/, run/ (pid file, cgid socket), cgi-bin/
#   VC_WEB_PORT     the port (default: [web] port of the config, else 8080)
#   VC_WEB_WSGI=1   also serve the same app under mod_wsgi at <prefix>-wsgi (for bench/web.py)
#   VC_VENV         the venv the pages run in (default <checkout>/.venv; built from
#                   /usr/bin/python3, because www-data must be able to run it)
#   VC_WEB_USERS    the demo users of `users` / `remove-users` (default "alice bob carol")
#
# Apache: mpm_event + mod_cgid (no prefork/mod_cgi stall), Listen 127.0.0.1 only, `Require local`,
# children and CGIs as www-data. Users reach it through an SSH port-forward.
# Who the user is ([web] auth): pam (default) = HTTP basic auth against the frontend's own
# accounts through mod_authnz_external + pwauth (Debian's setuid helper: PAM service "pwauth",
# /etc/shadow stays root's; mod_authnz_pam would check passwords inside the www-data process,
# which pam_unix cannot do for other users without www-data reading /etc/shadow); htpasswd =
# basic auth against [web] htpasswd (mod_authn_file); single-user = no authentication, every
# page says so. TRACE is off; a body over 1 MiB gets Apache's 413 (LimitRequestBody) before the
# CGI reads it, smaller ones over the app's 64 KiB its own 413.
# Processes are only ever stopped through the pid file written here.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=tools/lib.sh
. "$ROOT/tools/lib.sh"
VAR=${VC_VAR:-$ROOT/var}
VENV=${VC_VENV:-$ROOT/.venv}
PY=$VENV/bin/python3
A=$VAR/apache
CONF=$A/httpd.conf
PIDFILE=$A/run/httpd.pid
WEB_USER=www-data
M=/usr/lib/apache2/modules
USERS_DIR=$VAR/web-users
# the GECOS field of the local accounts `users` makes: `remove-users` removes only those
MARK="VC demo user (tools/web.sh)"
# Apache's own body limit (the app refuses more than 64 KiB itself); keep in step with
# vc.web.app.APACHE_MAX_BODY
BODY_LIMIT=1048576

install_packages() {
  local pkgs="apache2"
  [ "${AUTH:-pam}" = pam ] && pkgs="$pkgs libapache2-mod-authnz-external pwauth"
  [ "${AUTH:-pam}" = htpasswd ] && pkgs="$pkgs apache2-utils"
  [ "${VC_WEB_WSGI:-0}" = 1 ] && pkgs="$pkgs libapache2-mod-wsgi-py3"
  # shellcheck disable=SC2086
  apt_ensure $pkgs
}

check_venv() {
  [ -x "$PY" ] || die "no venv at $VENV (run 'make install')"
  # a pyenv python under /root (mode 700) cannot be run by www-data
  local base; base=$("$PY" -c 'import sys; print(sys.base_prefix)')
  [ "$base" = /usr ] || die "$VENV is built from $base; the pages need a venv built from /usr/bin/python3"
}

config_path() {
  CFG=${VC_CONFIG:-$VAR/vc.conf}
  [ -f "$CFG" ] || die "no configuration at $CFG (set VC_CONFIG, or run 'make config')"
  CFG=$(cd "$(dirname "$CFG")" && pwd)/$(basename "$CFG")
}

# web_get KEY: a [web] key of the configuration (htpasswd resolved under [site] state_dir)
web_get() { "$PY" -m vc.web.settings --get "$1" "$CFG" || die "bad [web] $1 in $CFG"; }

auth_mode() {
  AUTH=$(web_get auth)
  HTPASSWD=$(web_get htpasswd)
}

# the password file of auth = htpasswd: root's, readable by the web group only
ensure_htpasswd() {
  mkdir -p "$(dirname "$HTPASSWD")"
  [ -e "$HTPASSWD" ] || : >"$HTPASSWD"
  chown "root:$WEB_USER" "$HTPASSWD"
  chmod 640 "$HTPASSWD"
}

# the authentication block of the pages' <Location>/<Directory> sections
auth_block() {
  case $AUTH in
    single-user) echo "    Require local" ;;
    pam|htpasswd)
      echo "    AuthType Basic"
      echo "    AuthName \"VC virtual clusters\""
      if [ "$AUTH" = pam ]; then
        echo "    AuthBasicProvider external"
        echo "    AuthExternal pwauth"
      else
        echo "    AuthBasicProvider file"
        echo "    AuthUserFile $HTPASSWD"
      fi
      echo "    <RequireAll>"
      echo "        Require local"
      echo "        Require valid-user"
      echo "    </RequireAll>" ;;
  esac
}

auth_modules() {
  case $AUTH in
    single-user) echo "# [web] auth = single-user: no authentication (every page says so)" ;;
    pam|htpasswd)
      echo "LoadModule authn_core_module  $M/mod_authn_core.so"
      echo "LoadModule auth_basic_module  $M/mod_auth_basic.so"
      echo "LoadModule authz_user_module  $M/mod_authz_user.so"
      if [ "$AUTH" = pam ]; then
        echo "# the frontend's own accounts: pwauth (setuid root, PAM service \"pwauth\") checks"
        echo "# the password; the Apache children never read /etc/shadow"
        echo "LoadModule authnz_external_module $M/mod_authnz_external.so"
        echo "DefineExternalAuth pwauth pipe /usr/sbin/pwauth"
      else
        echo "LoadModule authn_file_module  $M/mod_authn_file.so"
      fi ;;
  esac
}

write_conf() {
  local port=$1 prefix=$2 wsgi=""
  if [ "${VC_WEB_WSGI:-0}" = 1 ]; then
    local group="process-group=vc" daemon
    daemon="WSGIDaemonProcess vc user=$WEB_USER group=$WEB_USER processes=${VC_WEB_WSGI_PROCESSES:-2} threads=${VC_WEB_WSGI_THREADS:-1} python-home=$VENV display-name=vc-wsgi"
    if [ "${VC_WEB_WSGI_MODE:-daemon}" = embedded ]; then
      daemon="WSGIPythonHome $VENV"
      group=""
    fi
    wsgi="
# the same application under mod_wsgi (the venv above), for bench/web.py
LoadModule wsgi_module        $M/mod_wsgi.so
WSGISocketPrefix $A/run/wsgi
$daemon
WSGIScriptAlias ${prefix}-wsgi $ROOT/vc/web/wsgi.py $group application-group=%{GLOBAL}
<Directory $ROOT/vc/web>
    <Files wsgi.py>
$(auth_block)
    </Files>
</Directory>"
  fi
  cat >"$CONF.tmp" <<EOF
# VC pages: private Apache written by tools/web.sh; loopback only. Not the system /etc/apache2.
ServerRoot "$A"
ServerName 127.0.0.1
Listen 127.0.0.1:$port
PidFile $PIDFILE
DefaultRuntimeDir $A/run
ErrorLog $A/logs/error.log
LogLevel warn
LogFormat "%h %u \"%r\" %>s %b %Dus" timed
CustomLog $A/logs/access.log timed
# mpm_event + mod_cgid: prefork + mod_cgi stalls ~47 ms reaping every CGI
LoadModule mpm_event_module   $M/mod_mpm_event.so
LoadModule cgid_module        $M/mod_cgid.so
ScriptSock $A/run/cgid.sock
LoadModule authz_core_module  $M/mod_authz_core.so
LoadModule authz_host_module  $M/mod_authz_host.so
LoadModule mime_module        $M/mod_mime.so
LoadModule alias_module       $M/mod_alias.so
LoadModule env_module         $M/mod_env.so
$(auth_modules)
TypesConfig /etc/mime.types
# the parent runs as root; children and the CGI pages run as this user
User $WEB_USER
Group $WEB_USER
Timeout 60
# no TRACE (it would echo the request, credentials included, back to a script)
TraceEnable off
# a larger body is refused by Apache before the CGI runs (413, connection kept clean)
LimitRequestBody $BODY_LIMIT
ErrorDocument 413 "the request body is larger than $BODY_LIMIT bytes"
<Directory />
    AllowOverride None
    Require all denied
</Directory>
# empty: nothing is served from here (CGI looks PATH_INFO up in it for PATH_TRANSLATED)
DocumentRoot $A/htdocs
<Directory $A/htdocs>
    Require local
</Directory>
# every URL under $prefix is the one front controller (PATH_INFO = the page)
ScriptAlias $prefix $A/cgi-bin/vc.cgi
ScriptAlias /cgi-bin/ $A/cgi-bin/
<Directory $A/cgi-bin>
    Options +ExecCGI
$(auth_block)
</Directory>
<Location $prefix>
$(auth_block)
</Location>
SetEnv VC_CONFIG $CFG
# compiled templates, written by the web user (CGI would compile them on every request)
SetEnv VC_WEB_CACHE $A/jinja-cache
$wsgi
EOF
  mv "$CONF.tmp" "$CONF"
}

start() {
  check_venv
  config_path
  auth_mode
  install_packages
  local port prefix
  port=${VC_WEB_PORT:-$("$PY" -m vc.web.settings --get port "$CFG")} || die "bad [web] port in $CFG"
  prefix=$("$PY" -m vc.web.settings --get url_prefix "$CFG") || die "bad [web] url_prefix in $CFG"
  [[ $port =~ ^[0-9]+$ ]] || die "VC_WEB_PORT must be a number, got '$port'"
  if pid_alive "$PIDFILE"; then
    log "Apache already running (pid $(cat "$PIDFILE")) on $(grep -m1 '^Listen' "$CONF" | cut -d' ' -f2)"
    return 0
  fi
  mkdir -p "$A/logs" "$A/run" "$A/cgi-bin" "$A/jinja-cache" "$A/htdocs"
  chmod 755 "$VAR" "$A" "$A/cgi-bin"
  chown "$WEB_USER:$WEB_USER" "$A/jinja-cache"
  chmod 700 "$A/jinja-cache"
  # secret + SSH key (www-data may not write the state dir), config readable by group www-data
  VC_CONFIG=$CFG "$PY" -m vc.web.prepare --group "$WEB_USER" >/dev/null \
    || die "could not prepare the state dir for the pages"
  # the front controller with this venv's python in its #! line
  { echo "#!$PY"; tail -n +2 "$ROOT/cgi-bin/vc.cgi"; } >"$A/cgi-bin/vc.cgi.tmp"
  chmod 755 "$A/cgi-bin/vc.cgi.tmp"
  mv "$A/cgi-bin/vc.cgi.tmp" "$A/cgi-bin/vc.cgi"
  [ "$AUTH" = htpasswd ] && ensure_htpasswd
  # www-data cannot write __pycache__ in the checkout: compile once here
  "$PY" -m compileall -q "$ROOT/vc" >/dev/null
  # fail here, with the reason, rather than with an HTTP 500 later
  runuser -u "$WEB_USER" -- env VC_CONFIG="$CFG" VC_WEB_CACHE="$A/jinja-cache" "$PY" -m vc.web.prepare --check / \
    || die "user $WEB_USER cannot serve the pages (every parent directory of $ROOT and $CFG needs o+x; see above)"
  write_conf "$port" "$prefix"
  /usr/sbin/apache2 -f "$CONF" -t >/dev/null 2>&1 || /usr/sbin/apache2 -f "$CONF" -t
  log "start Apache on 127.0.0.1:$port (config $CONF)"
  /usr/sbin/apache2 -f "$CONF" -k start
  local i
  for i in $(seq 200); do
    pid_alive "$PIDFILE" && port_open "$port" && break
    sleep 0.05
  done
  pid_alive "$PIDFILE" && port_open "$port" \
    || { tail -20 "$A/logs/error.log" >&2 || true; die "Apache did not start (log $A/logs/error.log)"; }
  log "VC pages: http://127.0.0.1:$port$prefix/  (from your machine: ssh -L $port:localhost:$port FRONTEND)"
  case $AUTH in
    pam) log "sign in with an account of this machine (tools/web.sh users makes the demo's)" ;;
    htpasswd) log "sign in with a user of $HTPASSWD (tools/web.sh users makes the demo's)" ;;
    single-user) log "single-user mode: everyone acts as [web] user $(web_get user)" ;;
  esac
}

admins() {
  "$PY" -c 'import sys; from vc import config; print(" ".join(config.load(sys.argv[1]).site.admins))' "$CFG" \
    || die "cannot read [site] admins of $CFG"
}

users() {
  check_venv
  config_path
  auth_mode
  local names=${VC_WEB_USERS:-alice bob carol} admins u pwfile pw role gecos
  if [ "$AUTH" = single-user ]; then log "[web] auth = single-user: no users to make"; return 0; fi
  install_packages
  admins=" $(admins) "
  mkdir -p "$USERS_DIR"
  chmod 700 "$USERS_DIR"
  [ "$AUTH" = htpasswd ] && ensure_htpasswd
  for u in $names; do
    [[ $u =~ ^[a-z][a-z0-9-]{0,30}$ ]] || die "demo user name '$u' is not a login name"
    pwfile=$USERS_DIR/$u.password
    # generated once; kept (and set again) afterwards
    [ -s "$pwfile" ] || (umask 077; head -c 15 /dev/urandom | base64 | tr -d '/+=' >"$pwfile")
    chmod 600 "$pwfile"
    pw=$(cat "$pwfile")
    if [ "$AUTH" = pam ]; then
      if ! gecos=$(getent passwd "$u" | cut -d: -f5); then
        useradd -m -s /bin/bash -c "$MARK" "$u" || die "useradd $u failed"
        log "created the local account $u"
      elif [ "$gecos" != "$MARK" ]; then
        die "the account $u exists and was not made by tools/web.sh: not touched (name other demo users with VC_WEB_USERS)"
      fi
      printf '%s:%s\n' "$u" "$pw" | chpasswd || die "chpasswd $u failed"
    else
      htpasswd -i -B "$HTPASSWD" "$u" <<<"$pw" 2>/dev/null || die "htpasswd $HTPASSWD $u failed"
    fi
    role=user
    [[ $admins == *" $u "* ]] && role=admin
    printf '%s %s %s %s\n' "$u" "$role" "$pw" "$pwfile"
  done
  local any=0
  for u in $names; do [[ $admins == *" $u "* ]] && any=1; done
  [ $any = 1 ] || log "none of $names is in [site] admins of $CFG ($admins): add the admin there"
  return 0
}

remove_users() {
  check_venv
  config_path
  auth_mode
  local names=${VC_WEB_USERS:-alice bob carol} u
  for u in $names; do
    [[ $u =~ ^[a-z][a-z0-9-]{0,30}$ ]] || die "demo user name '$u' is not a login name"
    if [ "$(getent passwd "$u" | cut -d: -f5)" = "$MARK" ]; then
      userdel -r "$u" 2>/dev/null || userdel "$u" || die "userdel $u failed"
      log "removed the local account $u"
    fi
    if [ -f "$HTPASSWD" ] && command -v htpasswd >/dev/null; then htpasswd -D "$HTPASSWD" "$u" >/dev/null 2>&1 || true; fi
    rm -f "$USERS_DIR/$u.password"
  done
}

stop() {
  if ! pid_alive "$PIDFILE"; then log "Apache not running"; rm -f "$PIDFILE"; return 0; fi
  local pid; pid=$(cat "$PIDFILE")
  kill -TERM "$pid"
  local i; for i in $(seq 200); do alive "$pid" || break; sleep 0.05; done
  if alive "$pid"; then log "Apache pid $pid still alive after 10 s: SIGKILL"; kill -KILL "$pid"; fi
  rm -f "$PIDFILE"
  log "Apache stopped (pid $pid)"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  users) users ;;
  remove-users) remove_users ;;
  status)
    if pid_alive "$PIDFILE"; then
      echo "apache: running (pid $(cat "$PIDFILE"), $(grep -m1 '^Listen' "$CONF" | cut -d' ' -f2))"
    else echo "apache: stopped"; fi ;;
  *) echo "usage: $0 start|stop|status|users|remove-users" >&2; exit 2 ;;
esac
