package attest_test

import (
	"errors"
	"fmt"

	"github.com/badge-dev/badge/attest"
)

func ExampleParseSelector() {
	s, err := attest.ParseSelector("unix:path:/opt/app:v2/bin/server")
	fmt.Printf("%q %q %q %v\n", s.Type, s.Key, s.Value, err)

	_, err = attest.ParseSelector("unix:uid:alice")
	var se *attest.SelectorError
	fmt.Println(errors.Is(err, attest.ErrInvalidValue), errors.As(err, &se) && se.Input == "unix:uid:alice")
	fmt.Println(err)
	// Output:
	// "unix" "path" "/opt/app:v2/bin/server" <nil>
	// true true
	// attest: invalid selector "unix:uid:alice": unix:uid: want a decimal number from 0 to 4294967294 without sign or leading zeros
}

func ExampleSet_Matches() {
	// What Attest returned for a caller.
	caller := attest.Set{
		{Type: "unix", Key: "uid", Value: "1001"}:             {},
		{Type: "unix", Key: "path", Value: "/usr/bin/web"}:    {},
		{Type: "systemd", Key: "unit", Value: "web.service"}:  {},
		{Type: "unix", Key: "supplementary_gid", Value: "33"}: {},
	}
	entry := []attest.Selector{
		{Type: "unix", Key: "uid", Value: "1001"},
		{Type: "systemd", Key: "unit", Value: "web.service"},
	}
	// The attestor only needs to compute what entries use.
	fmt.Println(attest.KindsOf(entry) == attest.KindUID|attest.KindSystemdUnit)
	fmt.Println(caller.Matches(entry), caller.Matches(nil))
	// Output:
	// true
	// true false
}
