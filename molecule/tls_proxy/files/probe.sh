#!/bin/sh
# Outside-in probes of the tls_proxy scenario; runs in a peer container on xf-tls-proxy with the
# study CA certificate mounted at /ca.crt. Prints KEY=VALUE lines that verify.yml asserts on.
#   probe.sh TARGET_IP SERVER_NAME ALIAS
ip=$1
name=$2
alias=$3
ca=/ca.crt
resolve="--resolve $name:443:$ip"

# HTTPS by name: chain verified against the study CA only (--cacert replaces the system store).
echo "https=$(curl -sS --cacert $ca $resolve -o /tmp/body -D /tmp/headers -w '%{http_code} HTTP/%{http_version}' "https://$name/" 2>&1)"
echo "https_body=$(grep -c 'stand-in upstream, not XNAT' /tmp/body)"
echo "hsts=$(tr -d '\r' </tmp/headers | sed -n 's/^[Ss]trict-[Tt]ransport-[Ss]ecurity: //p')"
echo "server=$(tr -d '\r' </tmp/headers | sed -n 's/^[Ss]erver: //p')"
# The alias and the IP address are in the certificate's SANs too.
echo "https_alias=$(curl -sS --cacert $ca --resolve "$alias:443:$ip" -o /dev/null -w '%{http_code}' "https://$alias/" 2>&1)"
echo "https_ip=$(curl -sS --cacert $ca -o /dev/null -w '%{http_code}' "https://$ip/" 2>&1)"

# Port 80: redirect to https, keeping path and query; a configured name is kept, the rest
# (IP address, unknown Host) goes to the canonical name.
echo "http_ip=$(curl -sS -o /dev/null -w '%{http_code} %{redirect_url}' "http://$ip/some/path?q=1" 2>&1)"
echo "http_alias=$(curl -sS -o /dev/null -w '%{http_code} %{redirect_url}' -H "Host: $alias" "http://$ip/a" 2>&1)"
echo "http_forged=$(curl -sS -o /dev/null -w '%{http_code} %{redirect_url}' -H 'Host: evil.example' "http://$ip/a" 2>&1)"

# 20 MiB POSTs (with Content-Length, and chunked) must reach the upstream complete, not 413:
# the stand-in answers with the byte count it read.
for mode in length chunked; do
  te=""
  [ "$mode" = chunked ] && te="Transfer-Encoding: chunked"
  out=$(head -c 20971520 /dev/zero | curl -sS --cacert $ca $resolve -o /tmp/upload -w '%{http_code}' \
        -H 'Content-Type: application/octet-stream' -H "$te" --data-binary @- "https://$name/upload" 2>&1)
  echo "upload_$mode=$out $(cat /tmp/upload)"
done

# Proxy headers as the upstream received them (the stand-in echoes them at /headers); the
# forged X-Forwarded-For must be replaced by the peer's address.
echo "headers=$(curl -sS --cacert $ca $resolve -H 'X-Forwarded-For: 192.0.2.66' "https://$name/headers" 2>&1)"

# Protocol versions. SECLEVEL=0 lets this client offer TLS 1.0/1.1 at all (OpenSSL 3 refuses
# them at the default level), so a failure there is the server's refusal, seen as its
# "protocol version" alert.
for v in tls1 tls1_1 tls1_2 tls1_3; do
  out=$(openssl s_client -connect "$ip:443" -servername "$name" -CAfile $ca -verify_return_error \
        "-$v" -cipher 'DEFAULT:@SECLEVEL=0' </dev/null 2>&1)
  rc=$?
  proto=$(echo "$out" | sed -n 's/^New, \(TLSv1[.0-9]*\), Cipher is \(.*\)$/\1 \2/p' | head -n 1)
  alert=$(echo "$out" | grep -o 'alert protocol version' | head -n 1)
  verify=$(echo "$out" | sed -n 's/^ *Verify return code: \([0-9]*\).*/\1/p' | head -n 1)
  echo "$v=rc:$rc proto:${proto:-none} verify:${verify:-none} alert:${alert:-none}"
done

# Chain: leaf + study CA, as sent by the server.
echo "chain=$(openssl s_client -connect "$ip:443" -servername "$name" -showcerts </dev/null 2>/dev/null | grep -c 'BEGIN CERTIFICATE')"
# TLS 1.2 suites outside the intermediate profile are refused (CBC, RSA key exchange).
for c in AES128-SHA ECDHE-RSA-AES128-SHA AES256-GCM-SHA384; do
  if openssl s_client -connect "$ip:443" -servername "$name" -tls1_2 -cipher "$c:@SECLEVEL=0" </dev/null >/dev/null 2>&1; then
    echo "weak_$c=accepted"
  else
    echo "weak_$c=refused"
  fi
done
