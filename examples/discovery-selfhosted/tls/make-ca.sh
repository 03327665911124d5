#!/bin/sh
# A private CA and a server certificate for the discovery service, for when
# a public CA (e.g. Let's Encrypt) is not an option. Nodes trust the CA
# through discovery_ca_certificate = file("tls/ca.pem").
#   sh tls/make-ca.sh discovery.example.com [203.0.113.5]
set -eu
name=${1:?usage: make-ca.sh DNS-NAME [IP]}
ip=${2:-}
dir=$(dirname "$0")
cd "$dir"
umask 077
san="DNS:$name"
[ -n "$ip" ] && san="$san,IP:$ip"

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
  -subj "/CN=meshspan discovery CA" -keyout ca-key.pem -out ca.pem \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -subj "/CN=$name" -keyout server-key.pem -out server.csr 2>/dev/null
printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n' "$san" > server.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 825 \
  -extfile server.ext -out server.pem 2>/dev/null
rm -f server.csr server.ext ca.srl
chmod 0644 ca.pem server.pem
echo "made $dir/ca.pem (give it to the nodes) and $dir/server.pem + server-key.pem (for the service; keep ca-key.pem offline)"
