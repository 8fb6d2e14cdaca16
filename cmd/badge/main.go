// Command badge is the badge certificate authority daemon and its CLI.
//
// Run "badge help" for the list of commands.
package main

import (
	"context"
	"os"
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
