// Command godwit is the single Godwit binary: hub, agent and client commands.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"godwit.dev/godwit/internal/cli"
	"godwit.dev/godwit/internal/hubcmd"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, os.Args[1:], cli.IO{In: os.Stdin, Out: os.Stdout, Err: os.Stderr}, hubcmd.Hub{})
	stop()
	os.Exit(code)
}
