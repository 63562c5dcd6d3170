#!/bin/sh
# A real OpenID provider (oidc-provider-mock from PyPI) for the central scenario, installed from
# wheels the controller downloaded into /wheels. Serves discovery at /.well-known/openid-configuration.
set -eu
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
python3 -m venv /opt/oidc
/opt/oidc/bin/pip install -q --no-index --find-links /wheels oidc-provider-mock
exec /opt/oidc/bin/oidc-provider-mock --host 0.0.0.0 --port 9400
