#!/usr/bin/env bash
# gen.sh makes the TLSA test vectors in this directory with openssl alone
# (plus od from coreutils, to print DER as hex for matching type 0), so that
# daneroll's digests are checked against an implementation that is not Go's.
#
# It writes keys in every PEM form daneroll reads, self-signed certificates
# for RSA 2048, EC P-256 and EC P-384 keys, a small CA chain
# (root -> intermediate -> leaf), and vectors.txt. The outputs are committed;
# tests never run this script. Run it again only to replace every vector:
#
#	cd dane/testdata/vectors && ./gen.sh
set -euo pipefail
cd "$(dirname "$0")"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# One config for every certificate, so no system openssl.cnf default (such
# as v3_ca on self-signed certificates) leaks in.
cat >"$tmp/openssl.cnf" <<'CNF'
[req]
distinguished_name = dn
prompt = no
[dn]
[root]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[int]
basicConstraints = critical,CA:TRUE,pathlen:0
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[leaf]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:mail.example.test,DNS:mx.example.test
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[self]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:self.example.test
subjectKeyIdentifier = hash
CNF
export OPENSSL_CONF="$tmp/openssl.cnf"

days=36500 # certificate tests must not start failing one day

# Keys. Each key exists as PKCS#8 (NAME.key), in its traditional form
# (PKCS#1 or SEC1), and as a PKIX public key (NAME.pub).
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rsa2048.key 2>/dev/null
openssl pkey -in rsa2048.key -traditional -out rsa2048.pkcs1.key
openssl rsa -in rsa2048.key -RSAPublicKey_out -out rsa2048.pkcs1.pub 2>/dev/null
# ecparam -genkey writes an "EC PARAMETERS" block before the SEC1 key, as
# many how-tos leave it in key files; readers must skip it.
openssl ecparam -name prime256v1 -genkey -out ec256.sec1.key
openssl pkey -in ec256.sec1.key -out ec256.key
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out ec384.key
openssl pkey -in ec384.key -traditional -out ec384.sec1.key
for k in rsa2048 ec256 ec384; do
	openssl pkey -in "$k.key" -pubout -out "$k.pub"
done
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out root.key
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out int.key 2>/dev/null
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out leaf.key

# Self-signed server certificates, one per key type.
for k in rsa2048 ec256 ec384; do
	openssl req -new -x509 -key "$k.key" -sha256 -days "$days" \
		-subj "/CN=self.example.test" -extensions self -out "$k.crt"
done

# The CA chain.
openssl req -new -x509 -key root.key -sha384 -days "$days" \
	-subj "/O=daneroll test/CN=daneroll test root" -extensions root -out root.crt
openssl req -new -key int.key -subj "/O=daneroll test/CN=daneroll test intermediate" -out "$tmp/int.csr"
openssl x509 -req -in "$tmp/int.csr" -CA root.crt -CAkey root.key -set_serial 2 -sha384 -days "$days" \
	-extfile "$OPENSSL_CONF" -extensions int -out int.crt 2>/dev/null
openssl req -new -key leaf.key -subj "/CN=mail.example.test" -out "$tmp/leaf.csr"
openssl x509 -req -in "$tmp/leaf.csr" -CA int.crt -CAkey int.key -set_serial 3 -sha256 -days "$days" \
	-extfile "$OPENSSL_CONF" -extensions leaf -out leaf.crt 2>/dev/null
cat leaf.crt int.crt >fullchain.pem

hexdump() { od -An -v -tx1 | tr -d ' \n'; }
# digest MATCHING reads DER on stdin and prints the association data.
digest() {
	local out
	case $1 in
	0) hexdump ;;
	1) out=$(openssl dgst -sha256) && echo "${out##*= }" ;;
	2) out=$(openssl dgst -sha512) && echo "${out##*= }" ;;
	esac
}
# certdata FILE SELECTOR MATCHING: the first certificate of FILE.
certdata() {
	case $2 in
	0) openssl x509 -in "$1" -outform DER | digest "$3" ;;
	# The pipeline of countless DANE how-tos, for "3 1 1" and its kin.
	1) openssl x509 -in "$1" -noout -pubkey | openssl pkey -pubin -outform DER | digest "$3" ;;
	esac
}
# lastcertdata FILE SELECTOR MATCHING: the last certificate of FILE.
lastcertdata() {
	local last="$tmp/last.pem"
	awk '/-BEGIN CERTIFICATE-/{buf=""} {buf=buf $0 "\n"} /-END CERTIFICATE-/{last=buf} END{printf "%s", last}' "$1" >"$last"
	certdata "$last" "$2" "$3"
}
keydata() {
	case $1 in
	*.pkcs1.pub) openssl rsa -RSAPublicKey_in -in "$1" -pubout -outform DER 2>/dev/null | digest "$2" ;;
	*.pub) openssl pkey -pubin -in "$1" -outform DER | digest "$2" ;;
	*) openssl pkey -in "$1" -pubout -outform DER | digest "$2" ;;
	esac
}

{
	cat <<'HDR'
# TLSA test vectors, made by gen.sh with openssl; do not edit by hand.
#
# One vector per line, fields separated by single spaces:
#
#	FILE USAGE SELECTOR MATCHING DATA
#
# FILE is a path relative to this directory. USAGE, SELECTOR and MATCHING are
# the TLSA record's parameters in decimal (RFC 6698 section 2.1). DATA is the
# certificate association data in lowercase hex, as computed by openssl:
# selector 0 hashes the certificate's DER, selector 1 the DER of its
# SubjectPublicKeyInfo (for "3 1 1": openssl x509 -in FILE -noout -pubkey |
# openssl pkey -pubin -outform DER | openssl dgst -sha256); matching 0 is the
# DER itself, 1 its SHA-256, 2 its SHA-512.
#
# Which certificate: the first one in FILE, except for usages 0 and 2 (a CA)
# when FILE holds a chain: then the last one, the top of the chain given.
# Key files (private keys in PKCS#8, PKCS#1 or SEC1, public keys in PKIX or
# PKCS#1) have only selector-1 vectors: the SubjectPublicKeyInfo of the key.
#
# So DATA is exactly what "daneroll tlsa --cert FILE --usage USAGE
# --selector SELECTOR --matching MATCHING" prints after the three numbers.
# Lines starting with # and blank lines are comments.
HDR
	for f in rsa2048.crt ec256.crt ec384.crt leaf.crt; do
		for s in 0 1; do for m in 0 1 2; do
			echo "$f 3 $s $m $(certdata "$f" $s $m)"
		done; done
	done
	for f in root.crt int.crt; do
		for s in 0 1; do for m in 0 1 2; do
			echo "$f 2 $s $m $(certdata "$f" $s $m)"
		done; done
	done
	for s in 0 1; do for m in 0 1 2; do
		echo "fullchain.pem 3 $s $m $(certdata fullchain.pem $s $m)"
		echo "fullchain.pem 2 $s $m $(lastcertdata fullchain.pem $s $m)"
		echo "fullchain.pem 1 $s $m $(certdata fullchain.pem $s $m)"
		echo "fullchain.pem 0 $s $m $(lastcertdata fullchain.pem $s $m)"
	done; done
	for f in rsa2048.key rsa2048.pkcs1.key rsa2048.pub rsa2048.pkcs1.pub \
		ec256.key ec256.sec1.key ec256.pub ec384.key ec384.sec1.key ec384.pub leaf.key; do
		for m in 0 1 2; do
			echo "$f 3 1 $m $(keydata "$f" $m)"
		done
	done
} >vectors.txt
