package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// env is what a command needs from its process.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
}

// command is one subcommand: its one-line help and its function.
type command struct {
	summary string
	run     func(ctx context.Context, e *env, args []string) error
}

// commands is the table of subcommands; "entry create" is keyed "entry create".
var commands map[string]command

func init() {
	commands = map[string]command{
		"server":           {"run the authority daemon", runServer},
		"agent":            {"run the agent of a node: this host's Workload API, signed through a badge server", runAgent},
		"entry create":     {"register a workload; prints the entry id", runEntryCreate},
		"entry list":       {"list registration entries", runEntryList},
		"entry show":       {"show one registration entry", runEntryShow},
		"entry delete":     {"delete a registration entry", runEntryDelete},
		"revoke":           {"revoke an ID's certificates (--id, optionally --block) or one certificate (--serial)", runRevoke},
		"unblock":          {"let a blocked ID be issued SVIDs again", runUnblock},
		"revocations list": {"list the revocations in force", runRevocationsList},
		"client create":    {"register an OAuth client for the token endpoint; prints its secret once", runClientCreate},
		"client list":      {"list OAuth clients", runClientList},
		"client delete":    {"delete an OAuth client", runClientDelete},
		"token create":     {"make a one-time join token for the agent of a node; prints it once", runTokenCreate},
		"node list":        {"list the nodes whose agents have attested", runNodeList},
		"node evict":       {"evict a node: revoke its node SVID and refuse it until a new token", runNodeEvict},
		"svid fetch":       {"fetch this process's X.509-SVIDs from the Workload API", runSVIDFetch},
		"bundle show":      {"print the trust bundle", runBundleShow},
		"healthcheck":      {"exit 0 when the server answers on both sockets and is ready (an agent: on its Workload API socket)", runHealthcheck},
		"status":           {"show the server's state: keys, entries, streams, issuance, revocations, database, last errors", runStatus},
		"version":          {"print the version", runVersion},
		"keys list":        {"list the signing keys: root, intermediate and JWT keys, prepared, active and retired", runKeysList},
		"keys rotate":      {"replace the root, intermediate or JWT key now (--kind); the old one stays trusted until what it signed expires", runKeysRotate},
		"audit list":       {"list the audit trail of admin actions", runAuditList},
		"audit verify":     {"verify the audit trail's hash chain and signed head", runAuditVerify},
		"backup":           {"write an online backup of the server's state and CA keys to a file", runBackup},
		"restore":          {"restore a backup into an empty data directory", runRestore},
	}
}

// usageError is a mistake in how a command was called: exit code 2.
type usageError struct{ err error }

func (u usageError) Error() string { return u.err.Error() }
func (u usageError) Unwrap() error { return u.err }

func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr, getenv: os.Getenv}
	return e.dispatch(ctx, args)
}

func (e *env) dispatch(ctx context.Context, args []string) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		e.usage()
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	name := args[0]
	rest := args[1:]
	cmd, ok := commands[name]
	if !ok && len(args) > 1 {
		name = args[0] + " " + args[1]
		rest = args[2:]
		cmd, ok = commands[name]
	}
	if !ok {
		e.unknownCommand(args)
		return exitUsage
	}
	err := cmd.run(ctx, e, rest)
	var ue usageError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(e.stderr, "badge %s: %s\nrun 'badge %s -h' for usage\n", name, oneLine(err.Error()), name)
		return exitUsage
	default:
		fmt.Fprintf(e.stderr, "badge %s: %s\n", name, oneLine(err.Error()))
		return exitFailure
	}
}

// unknownCommand reports a command that is not in the table in one line,
// with the subcommands of a group ("badge entry") or the nearest command
// to a typo ("badge sevrer"), and a pointer to the list of commands.
func (e *env) unknownCommand(args []string) {
	subs := subcommands(args[0])
	switch {
	case len(subs) > 0 && len(args) == 1:
		fmt.Fprintf(e.stderr, "badge %s: missing subcommand: want %s\n", args[0], orList(subs))
	case len(subs) > 0 && !strings.HasPrefix(args[1], "-"):
		given := args[0] + " " + args[1]
		fmt.Fprintf(e.stderr, "badge: unknown command %q%s\n", given, suggestion(given, commandNames()))
	case len(subs) > 0:
		fmt.Fprintf(e.stderr, "badge %s: missing subcommand before %s: want %s\n", args[0], args[1], orList(subs))
	default:
		fmt.Fprintf(e.stderr, "badge: unknown command %q%s\n", args[0], suggestion(args[0], topLevelNames()))
	}
	fmt.Fprintln(e.stderr, "run 'badge help' for the list of commands")
}

// subcommands returns the sorted subcommands of a group such as "entry".
func subcommands(group string) []string {
	var out []string
	for n := range commands {
		if g, sub, ok := strings.Cut(n, " "); ok && g == group {
			out = append(out, sub)
		}
	}
	sort.Strings(out)
	return out
}

// commandNames returns every command name ("server", "entry create", ...).
func commandNames() []string {
	out := make([]string, 0, len(commands))
	for n := range commands {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// topLevelNames returns the first words of the command names.
func topLevelNames() []string {
	var out []string
	for _, n := range commandNames() {
		first, _, _ := strings.Cut(n, " ")
		if len(out) == 0 || out[len(out)-1] != first {
			out = append(out, first)
		}
	}
	return out
}

func orList(words []string) string {
	if len(words) == 1 {
		return words[0]
	}
	return strings.Join(words[:len(words)-1], ", ") + " or " + words[len(words)-1]
}

// suggestion returns "; did you mean 'NAME'?" for the candidate nearest to
// given, if one is close enough to be a typo, else "".
func suggestion(given string, candidates []string) string {
	best, bestDist := "", -1
	for _, c := range candidates {
		d := editDistance(given, c)
		if bestDist < 0 || d < bestDist {
			best, bestDist = c, d
		}
	}
	// A typo is a slip or two, not a different word: at most a third of
	// the word, and at most 2 edits.
	if bestDist < 0 || bestDist > 2 || bestDist*3 > len(given) {
		return ""
	}
	return fmt.Sprintf("; did you mean '%s'?", best)
}

// editDistance is the Damerau-Levenshtein (optimal string alignment)
// distance between a and b: insertions, deletions, substitutions and
// transpositions of adjacent bytes each count one.
func editDistance(a, b string) int {
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func (e *env) usage() {
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Fprintln(e.stderr, "Usage: badge COMMAND [flags]\n\nCommands:")
	width := 0
	for _, n := range names {
		width = max(width, len(n))
	}
	for _, n := range names {
		fmt.Fprintf(e.stderr, "  %-*s  %s\n", width, n, commands[n].summary)
	}
	fmt.Fprintln(e.stderr, "\nRun badge COMMAND -h for the flags of a command.")
}
