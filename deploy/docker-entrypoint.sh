#!/bin/sh
# Entry point of the Mist image: `web` (default), `worker`, `manage <command...>`, or any command.
set -eu
cd /app
# nginx runs in its own container as another user and reads the shared volumes.
umask 0022
case "${1:-web}" in
  web)
    # One web container: it brings the schema up to date before serving.
    python manage.py migrate --noinput
    python manage.py createcachetable
    python manage.py collectstatic --noinput -v 0
    exec gunicorn --config /app/deploy/gunicorn.conf.py mist.wsgi:application
    ;;
  worker)
    exec python manage.py qcluster
    ;;
  manage)
    shift
    exec python manage.py "$@"
    ;;
  *)
    exec "$@"
    ;;
esac
