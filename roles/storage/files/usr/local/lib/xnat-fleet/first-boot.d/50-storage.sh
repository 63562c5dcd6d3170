#!/bin/sh
# Managed by Ansible (role storage of xnat-fleet).
# A first-boot hook (run by /usr/local/sbin/xnat-fleet-first-boot): grow the root and lay out
# the data storage of /etc/xnat-fleet/storage.json before PostgreSQL's password and Tomcat.
exec /usr/local/sbin/xnat-fleet-storage apply
