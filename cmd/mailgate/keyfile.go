package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/mailgate/mailgate/accounts"
	"github.com/mailgate/mailgate/oauth"
)

// openKey reads the key file, creating it only while no account is
// stored: a new key could not open the refresh tokens sealed with the
// old one, so a missing file then means the configuration points at the
// wrong place, and creating one would hide that until the next fetch.
// Refusals of the configured path exit 2, like every configuration error.
func openKey(ctx context.Context, path string, acc *accounts.Store) (*oauth.Box, error) {
	if path == "" {
		return nil, cli.Exit("secrets.key_file: not set", exitConfig)
	}
	box, err := oauth.LoadKey(path)
	if !errors.Is(err, fs.ErrNotExist) {
		if err != nil {
			return nil, cli.Exit(fmt.Sprintf("secrets.key_file: %v", err), exitConfig)
		}
		return box, nil
	}
	list, err := acc.List(ctx)
	if err != nil {
		return nil, err
	}
	if len(list) > 0 {
		return nil, cli.Exit(fmt.Sprintf("secrets.key_file: %s does not exist, but Redis holds %d account(s) whose refresh tokens were sealed with a key: "+
			"point secrets.key_file (or $STATE_DIRECTORY) at that key file; mailgate does not create a new key while accounts exist", path, len(list)), exitConfig)
	}
	if box, err = oauth.LoadOrCreateKey(path); err != nil {
		return nil, cli.Exit(fmt.Sprintf("secrets.key_file: %v", err), exitConfig)
	}
	return box, nil
}

// keyFileState names the key file in use and whether it exists yet.
func keyFileState(path string) string {
	if _, err := os.Stat(path); err != nil {
		return path + " (not there yet: created when the first account is connected)"
	}
	return path
}
