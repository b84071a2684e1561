#!/bin/sh
# The demo directory's command (deploy/openldap/Dockerfile; also runs on any host with
# Debian's slapd). On the first start it writes slapd.conf and loads the seed: the suffix
# dc=example,dc=org, ou=people with one person, ada, ou=groups with cn=idp-admins (ada is a
# member: set IDP_LDAP_ADMIN_GROUP to its full DN) and cn=staff, and the service account the
# IdP searches with, cn=idp,ou=services. Later starts keep both. Then slapd runs in the
# foreground (the container's main process; SIGTERM stops it cleanly).
#
#   LDAP_ADA_PASSWORD      ada's password (first start)             or LDAP_ADA_PASSWORD_FILE
#   LDAP_SERVICE_PASSWORD  cn=idp,ou=services's (first start)       or LDAP_SERVICE_PASSWORD_FILE
#   LDAP_ADMIN_PASSWORD    optional: lets cn=admin,dc=example,dc=org (the rootdn) bind, to
#                          add people with ldapadd                  or LDAP_ADMIN_PASSWORD_FILE
#   LDAP_DIR   /var/lib/ldap-demo   slapd.conf and the database
#   LDAP_HOST  (every address)      LDAP_PORT 1389 (above 1024: slapd needs no root)
#   LDAP_SCHEMA_DIR /etc/ldap/schema, LDAP_MODULE_DIR /usr/lib/ldap (Debian's paths)
set -eu
umask 077  # the database holds password hashes
DIR="${LDAP_DIR:-/var/lib/ldap-demo}"
PORT="${LDAP_PORT:-1389}"
HOST="${LDAP_HOST:-}"
SCHEMAS="${LDAP_SCHEMA_DIR:-/etc/ldap/schema}"
MODULES="${LDAP_MODULE_DIR:-/usr/lib/ldap}"
SUFFIX="dc=example,dc=org"
PATH="$PATH:/usr/sbin:/usr/local/sbin"

fail() {
    echo "demo directory: $*" >&2
    exit 1
}

# secret NAME: the value of $NAME, or the content of the file $NAME_FILE (a Docker secret).
secret() {
    eval "value=\${$1:-}"
    eval "file=\${$1_FILE:-}"
    if [ -n "$file" ]; then
        [ -z "$value" ] || fail "set $1 or $1_FILE, not both"
        [ -r "$file" ] || fail "$1_FILE: cannot read $file"
        value=$(cat "$file")
    fi
    printf '%s' "$value"
}

# hash NAME: {SSHA} of the secret NAME, which must be set; never on a command line.
hash() {
    value=$(secret "$1")
    [ -n "$value" ] || fail "$1 is not set: the first start needs it (or $1_FILE)"
    printf '%s' "$value" | slappasswd -T /dev/stdin -h '{SSHA}'
}

first_start() {
    ada=$(hash LDAP_ADA_PASSWORD)
    service=$(hash LDAP_SERVICE_PASSWORD)
    rootpw=""
    admin=$(secret LDAP_ADMIN_PASSWORD)
    if [ -n "$admin" ]; then
        rootpw="rootpw $(hash LDAP_ADMIN_PASSWORD)"
    fi
    rm -rf "$DIR/db" "$DIR/seed.ldif"
    mkdir -p "$DIR/db"
    (
        cat > "$DIR/slapd.conf.new" <<CONF
include $SCHEMAS/core.schema
include $SCHEMAS/cosine.schema
include $SCHEMAS/inetorgperson.schema
include $SCHEMAS/nis.schema
modulepath $MODULES
moduleload back_mdb
pidfile $DIR/slapd.pid
argsfile $DIR/slapd.args

database mdb
maxsize 104857600
suffix "$SUFFIX"
rootdn "cn=admin,$SUFFIX"
$rootpw
directory $DIR/db
index objectClass eq
index uid,cn,mail eq
index member eq
index entryUUID eq

# Passwords: checked by binding, changed by their owner, read by nobody.
access to attrs=userPassword
    by self write
    by anonymous auth
    by * none
# The root DSE, for health checks.
access to dn.base=""
    by * read
# Everything else: the IdP's service account, and each person their own entry.
access to *
    by dn.exact="cn=idp,ou=services,$SUFFIX" read
    by self read
    by * none
CONF
        cat > "$DIR/seed.ldif" <<LDIF
dn: $SUFFIX
objectClass: top
objectClass: dcObject
objectClass: organization
dc: example
o: Example

dn: ou=people,$SUFFIX
objectClass: organizationalUnit
ou: people

dn: ou=groups,$SUFFIX
objectClass: organizationalUnit
ou: groups

dn: ou=services,$SUFFIX
objectClass: organizationalUnit
ou: services

dn: cn=idp,ou=services,$SUFFIX
objectClass: organizationalRole
objectClass: simpleSecurityObject
cn: idp
description: The identity provider's service account (read-only)
userPassword: $service

dn: uid=ada,ou=people,$SUFFIX
objectClass: inetOrgPerson
uid: ada
cn: Ada Lovelace
sn: Lovelace
givenName: Ada
displayName: Ada Lovelace
mail: ada@example.org
userPassword: $ada

dn: cn=idp-admins,ou=groups,$SUFFIX
objectClass: groupOfNames
cn: idp-admins
description: Administrators of the identity provider (IDP_LDAP_ADMIN_GROUP)
member: uid=ada,ou=people,$SUFFIX

dn: cn=staff,ou=groups,$SUFFIX
objectClass: groupOfNames
cn: staff
member: uid=ada,ou=people,$SUFFIX
LDIF
    )
    slapadd -q -f "$DIR/slapd.conf.new" -l "$DIR/seed.ldif"
    rm -f "$DIR/seed.ldif"
    # Last: a start that failed before this line starts over.
    mv "$DIR/slapd.conf.new" "$DIR/slapd.conf"
    echo "demo directory: created $SUFFIX with uid=ada,ou=people,$SUFFIX" >&2
}

[ -f "$DIR/slapd.conf" ] || first_start
exec slapd -d "${LDAP_DEBUG:-0}" -f "$DIR/slapd.conf" -h "ldap://$HOST:$PORT/"
