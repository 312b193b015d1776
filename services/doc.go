// Package services talks to the programs that present daneroll's
// certificates (postfix, dovecot, nginx…).
//
// [Reload] runs a service's reload command, an argv array that is never
// passed through a shell nor split on spaces, with a timeout that kills the
// command and everything it started, and the environment the caller gives
// ([EnvWithout] keeps daneroll's secrets out of it); a failure is a
// [*ReloadError] with the exit status and the command's output, whose first
// and last lines its message quotes.
//
// [Probe] connects to an [Endpoint] such as smtp://mail.example.org:25
// (see [ParseEndpoint]), speaks the protocol's STARTTLS dialogue where the
// scheme calls for it (SMTP, IMAP, POP3), completes a TLS handshake and
// returns the chain the server sent. It does no PKIX verification: the
// caller verifies the chain against TLSA records, which is the point of
// probing at all. [ProbeUntil] retries until the served chain is the
// expected one, because reloads are asynchronous.
//
// [Resolve] looks host names up through a given validating resolver, as a
// DANE client does, rather than /etc/hosts and /etc/resolv.conf;
// [ResolverDialer] makes probes connect that way.
//
// Nothing here prints or exits; errors are one line and name the command or
// endpoint they concern.
package services
