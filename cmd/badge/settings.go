package main

import (
	"cmp"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/BurntSushi/toml"
)

// origin says where the value of a setting came from: the command line,
// an environment variable, a line of the config file, or the default.
type origin struct {
	env  string // the environment variable, for a value from the environment
	file string // the config file, for a value from it
	line int    // its line, from 1
	flag bool   // the command line
}

// String names the origin as the operator would look for it:
// "command line", "environment BADGE_SVID_TTL", "/etc/badge/server.toml:3"
// or "" for a default.
func (o origin) String() string {
	switch {
	case o.flag:
		return "command line"
	case o.env != "":
		return "environment " + o.env
	case o.file != "" && o.line > 0:
		return fmt.Sprintf("%s:%d", o.file, o.line)
	case o.file != "":
		return o.file
	}
	return ""
}

// problem is one thing wrong with a configuration, naming the setting,
// the value and where it came from, so that an operator can find it.
type problem struct {
	key   string // the setting (flag name); "" for a file or command line as a whole
	value string // the offending value; "" when the problem is not about one value
	msg   string
	at    origin
}

func (p problem) Error() string {
	var b strings.Builder
	if w := p.at.String(); w != "" {
		b.WriteString(w + ": ")
	}
	if p.key != "" {
		b.WriteString(p.key)
		if p.value != "" {
			fmt.Fprintf(&b, " = %q", p.value)
		}
		b.WriteString(": ")
	}
	b.WriteString(p.msg)
	return b.String()
}

// settings is what load read: which flags the command line set, where
// every value that is not a default came from, and every problem found.
type settings struct {
	// parsed is whether the command line parsed: a flag parse stops at the
	// first bad flag, leaving the rest in fs.Args.
	parsed   bool
	cmdline  map[string]bool
	origins  map[string]origin
	raw      map[string]string // the values from the environment and file, as written
	problems []problem
}

// at returns the origin of the value of flag name (the zero origin, a
// default, if nothing set it).
func (s *settings) at(name string) origin { return s.origins[name] }

// load parses args and then fills every flag the command line did not
// set: first from its BADGE_* environment variable (--svid-ttl from
// BADGE_SVID_TTL), then from the TOML file named by *configFile, if any.
// Every value goes through the flag's own Set, so all three sources are
// validated alike. It goes on past a bad value so as to report every
// problem of the configuration at once; a flag whose value was refused
// keeps its default. Flags in noEnv are read from the command line only.
// scratch, if not nil, is a second flag set like fs on which the file's
// values of flags set on the command line or in the environment are
// checked too. The error is flag.ErrHelp for -h, after printing the usage.
func (e *env) load(fs, scratch *flag.FlagSet, args []string, configFile *string, noEnv ...string) (*settings, error) {
	usage, out := fs.Usage, fs.Output()
	fs.Usage = func() {}
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	fs.Usage = usage
	fs.SetOutput(out)
	st := &settings{parsed: err == nil, cmdline: map[string]bool{}, origins: map[string]origin{}, raw: map[string]string{}}
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.Usage()
			return nil, err
		}
		// The flag package's message names the flag and the value.
		st.problems = append(st.problems, problem{msg: err.Error()})
	}
	fs.Visit(func(f *flag.Flag) {
		st.cmdline[f.Name] = true
		st.origins[f.Name] = origin{flag: true}
	})
	set := map[string]bool{}
	for k := range st.cmdline {
		set[k] = true
	}
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || slices.Contains(noEnv, f.Name) {
			return
		}
		name := envName(f.Name)
		if v := e.getenv(name); v != "" {
			set[f.Name] = true
			at := origin{env: name}
			if serr := fs.Set(f.Name, v); serr != nil {
				st.problems = append(st.problems, problem{key: f.Name, value: v, msg: serr.Error(), at: at})
				return
			}
			st.origins[f.Name] = at
			st.raw[f.Name] = v
		}
	})
	if configFile != nil && *configFile != "" {
		data, err := os.ReadFile(*configFile)
		if err != nil {
			st.problems = append(st.problems, problem{key: "config", msg: "reading config file: " + err.Error(), at: st.origins["config"]})
		} else {
			st.problems = append(st.problems, configProblems(fs, scratch, *configFile, data, set, st.origins, st.raw, noEnv...)...)
		}
	}
	return st, nil
}

// configProblems sets flags from the TOML document data, read from path,
// whose keys are flag names (trust-domain = "example.org", svid-ttl = "5m")
// and whose values are strings, numbers or booleans. Flags in set are left
// alone (the command line and environment beat the file); their values in
// the file are checked on scratch, if not nil. It records the
// line each value came from in origins, the value as written in raw (if
// not nil), and returns every problem, each
// naming its key and line: a syntax error, an unknown key (config itself,
// and the flags in noFile, are unknown too), a value of the wrong type,
// a value the flag refuses.
func configProblems(fs, scratch *flag.FlagSet, path string, data []byte, set map[string]bool, origins map[string]origin, raw map[string]string, noFile ...string) []problem {
	var values map[string]toml.Primitive
	md, err := toml.Decode(string(data), &values)
	if err != nil {
		at := origin{file: path}
		var pe toml.ParseError
		if errors.As(err, &pe) {
			at.line = pe.Position.Line
			err = errors.New(pe.Message)
		}
		return []problem{{msg: "not a valid TOML document: " + err.Error(), at: at}}
	}
	type keyed struct {
		key   string
		value any
		at    origin
	}
	keys := make([]keyed, 0, len(values))
	for k, prim := range values {
		var p valueProbe
		at := origin{file: path}
		var pe toml.ParseError
		if err := md.PrimitiveDecode(prim, &p); errors.As(err, &pe) {
			at.line = pe.Position.Line
		}
		keys = append(keys, keyed{k, p.v, at})
	}
	slices.SortFunc(keys, func(a, b keyed) int { return cmp.Or(a.at.line-b.at.line, strings.Compare(a.key, b.key)) })
	var probs []problem
	for _, k := range keys {
		f := fs.Lookup(k.key)
		if f == nil || k.key == "config" || slices.Contains(noFile, k.key) {
			msg := "unknown setting"
			if s := suggestion(k.key, flagNames(fs, noFile)); s != "" {
				msg += s
			}
			probs = append(probs, problem{key: k.key, msg: msg, at: k.at})
			continue
		}
		var s string
		switch v := k.value.(type) {
		case string:
			s = v
		case int64, bool, float64:
			s = fmt.Sprint(v)
		default:
			probs = append(probs, problem{key: k.key, msg: "must be a string, number or boolean, not " + md.Type(k.key), at: k.at})
			continue
		}
		if set[k.key] {
			if sf := lookup(scratch, k.key); sf != nil {
				if err := sf.Value.Set(s); err != nil {
					probs = append(probs, problem{key: k.key, value: s, msg: err.Error() + " (overridden by the command line or environment)", at: k.at})
				}
			}
			continue
		}
		if err := fs.Set(k.key, s); err != nil {
			probs = append(probs, problem{key: k.key, value: s, msg: err.Error(), at: k.at})
			continue
		}
		origins[k.key] = k.at
		if raw != nil {
			raw[k.key] = s
		}
	}
	return probs
}

// lookup is fs.Lookup(name) for a flag set that may be nil.
func lookup(fs *flag.FlagSet, name string) *flag.Flag {
	if fs == nil {
		return nil
	}
	return fs.Lookup(name)
}

// flagNames returns the names a config file may use: the flags of fs but
// config and those in except.
func flagNames(fs *flag.FlagSet, except []string) []string {
	var out []string
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name != "config" && !slices.Contains(except, f.Name) {
			out = append(out, f.Name)
		}
	})
	return out
}

// errProbed stops the decoding of a value once valueProbe holds it: the
// decoder's error carries the line of the key.
var errProbed = errors.New("probed")

// valueProbe takes a TOML value as it is, and fails, so that the decoder
// reports the line of its key (the toml package exposes key positions
// only in errors).
type valueProbe struct{ v any }

func (p *valueProbe) UnmarshalTOML(v any) error {
	p.v = v
	return errProbed
}
