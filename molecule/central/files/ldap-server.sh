#!/bin/sh
# A real OpenLDAP server (Debian's slapd) for the central scenario, seeded with the XNAT bind
# account and one user. Runs in a peer container: installs slapd, loads seed.ldif, serves ldap://.
set -eu
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slapd ldap-utils >/dev/null
mkdir -p /var/lib/ldap-test
cat > /etc/ldap/test-slapd.conf <<CONF
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
modulepath /usr/lib/ldap
moduleload back_mdb
database mdb
suffix "dc=moltest,dc=example"
rootdn "cn=admin,dc=moltest,dc=example"
rootpw admin-TEST-ONLY
directory /var/lib/ldap-test
access to attrs=userPassword by anonymous auth by * none
access to * by users read by * none
CONF
slapadd -f /etc/ldap/test-slapd.conf -l /seed.ldif
exec slapd -f /etc/ldap/test-slapd.conf -h "ldap:///" -u root -d 0
