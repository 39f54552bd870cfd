// Command wideep-launch turns one sbatch into a disaggregated Dynamo + SGLang
// wide-EP deployment. All logic lives in the cli package so tests can drive it.
package main

import (
	"os"

	"github.com/wideep/wideep-launch/cmd/wideep-launch/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], cli.OSSystem()))
}
