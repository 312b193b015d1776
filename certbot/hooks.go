package certbot

import (
	"path"
	"regexp"
	"slices"
	"strings"
)

// Service is a [service.NAME] table made from certbot's hooks.
type Service struct {
	Name string
	// Reload is the command as an argv.
	Reload []string
	// From lists where it came from: `renew_hook of mail.example.org`.
	From []string
	// Probe is a suggested probe URL, or "".
	Probe string
}

// reloadCmd is one reload found in a hook.
type reloadCmd struct {
	name string
	argv []string
}

var (
	// plainHook is a shell command with nothing a shell would expand,
	// quote, redirect or pipe: words, "&&" and ";".
	plainHook = regexp.MustCompile(`^[A-Za-z0-9_./@:%+=,&; \t-]*$`)
	unitName  = regexp.MustCompile(`^[A-Za-z0-9@._:-]+$`)
)

// reloadVerbs are the systemctl, service and init.d verbs that reload or
// restart a service.
var reloadVerbs = []string{"reload", "restart", "try-restart", "reload-or-restart", "try-reload-or-restart", "force-reload"}

// ctlPrograms reload their service with "PROGRAM reload".
var ctlPrograms = map[string]string{
	"postfix": "postfix", "prosodyctl": "prosody", "rndc": "named", "unbound-control": "unbound", "nsd-control": "nsd",
}

// reloads splits a hook's shell command into the reload commands it is
// made of. It returns false when the command is anything else: daneroll
// runs argv arrays, never a shell, so only plain reloads carry over.
func reloads(command string) ([]reloadCmd, bool) {
	if !plainHook.MatchString(command) || strings.Contains(strings.ReplaceAll(command, "&&", ""), "&") {
		return nil, false
	}
	var out []reloadCmd
	for _, part := range strings.Split(strings.ReplaceAll(command, "&&", ";"), ";") {
		argv := strings.Fields(part)
		if len(argv) == 0 {
			continue
		}
		cmds, ok := reloadOf(argv)
		if !ok {
			return nil, false
		}
		out = append(out, cmds...)
	}
	return out, len(out) > 0
}

func reloadOf(argv []string) ([]reloadCmd, bool) {
	prog := path.Base(argv[0])
	switch {
	case prog == "systemctl":
		var opts, units []string
		verb := ""
		for _, a := range argv[1:] {
			switch {
			case a == "-q" || a == "--quiet" || a == "--no-block":
				opts = append(opts, a)
			case strings.HasPrefix(a, "-"):
				return nil, false
			case verb == "":
				verb = a
			default:
				units = append(units, a)
			}
		}
		if !slices.Contains(reloadVerbs, verb) || verb == "force-reload" || len(units) == 0 {
			return nil, false
		}
		var out []reloadCmd
		for _, u := range units {
			if !unitName.MatchString(u) {
				return nil, false
			}
			cmd := append(append(append([]string{argv[0]}, opts...), verb), u)
			out = append(out, reloadCmd{name: strings.TrimSuffix(u, ".service"), argv: cmd})
		}
		return out, true
	case prog == "service" && len(argv) == 3 && unitName.MatchString(argv[1]) && slices.Contains(reloadVerbs, argv[2]):
		return []reloadCmd{{name: argv[1], argv: argv}}, true
	case path.Dir(argv[0]) == "/etc/init.d" && len(argv) == 2 && unitName.MatchString(prog) && slices.Contains(reloadVerbs, argv[1]):
		return []reloadCmd{{name: prog, argv: argv}}, true
	case prog == "nginx" && len(argv) == 3 && argv[1] == "-s" && argv[2] == "reload":
		return []reloadCmd{{name: "nginx", argv: argv}}, true
	case (prog == "apachectl" || prog == "apache2ctl") && len(argv) == 2 && (argv[1] == "graceful" || argv[1] == "restart"):
		return []reloadCmd{{name: "apache2", argv: argv}}, true
	case prog == "doveadm" && len(argv) == 2 && argv[1] == "reload":
		return []reloadCmd{{name: "dovecot", argv: argv}}, true
	case len(argv) == 2 && argv[1] == "reload" && ctlPrograms[prog] != "":
		return []reloadCmd{{name: ctlPrograms[prog], argv: argv}}, true
	}
	return nil, false
}

// probeFor suggests a probe for a service of a certificate.
func probeFor(service, domain string) string {
	name := strings.TrimSuffix(strings.SplitN(service, "@", 2)[0], ".service")
	switch name {
	case "postfix", "exim4", "exim", "opensmtpd", "sendmail":
		return "smtp://" + domain + ":25"
	case "dovecot", "cyrus-imapd", "courier-imap-ssl":
		return "imaps://" + domain + ":993"
	case "nginx", "apache2", "apache", "httpd", "caddy", "haproxy", "lighttpd":
		return "https://" + domain + ":443"
	}
	return ""
}
