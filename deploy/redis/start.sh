#!/bin/sh
# Starts redis-server with the users of users.acl (next to this script), each
# ${REDIS_*_PASSWORD} placeholder replaced by that variable of the environment,
# and the arguments given (e.g. --appendonly yes). The rendered file, which holds
# the passwords, is written to $REDIS_ACL_FILE (default /tmp/users.acl), readable
# by this user only.
#
# Passwords are letters and digits, 16 or more (openssl rand -hex 32): they are
# written into the ACL file and into redis:// URLs as they are.
set -eu
here=$(dirname "$0")
rendered=${REDIS_ACL_FILE:-/tmp/users.acl}
script=""
for name in REDIS_WORKER_PASSWORD REDIS_API_PASSWORD REDIS_PUBLISHER_PASSWORD REDIS_FLOWER_PASSWORD; do
    eval "value=\${$name:-}"
    case $value in
        *[!A-Za-z0-9]* | "")
            echo "start.sh: $name must be set to letters and digits (openssl rand -hex 32)" >&2
            exit 2
            ;;
    esac
    if [ ${#value} -lt 16 ]; then
        echo "start.sh: $name is shorter than 16 characters" >&2
        exit 2
    fi
    script="$script s/\${$name}/$value/g;"
done
umask 077
sed -e '/^[[:space:]]*#/d' -e "$script" "$here/users.acl" > "$rendered"
if grep -q '\${' "$rendered"; then
    echo "start.sh: $here/users.acl names a password this script does not set" >&2
    exit 2
fi
exec redis-server --aclfile "$rendered" "$@"
