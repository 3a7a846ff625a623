package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/mailgate/mailgate/config"
	"github.com/mailgate/mailgate/oauth"
)

// checkFiles is the one check of what the configuration names on disk,
// run by both `config check` and `serve` before anything starts: the
// DKIM keys, the relay's certificate and key, google.ca_file and the
// refresh-token key file. config.Validate has checked the values (an
// exposed relay included); this opens the files. Every problem is
// reported at once, each naming its key, and the error exits 2 like any
// configuration error.
func checkFiles(cfg *config.Config) error {
	var errs []error
	if _, err := loadDKIMKeys(cfg); err != nil {
		errs = append(errs, err)
	}
	if _, err := relayServerTLS(cfg); err != nil {
		errs = append(errs, err)
	}
	if _, err := clientTLS(cfg.Google.CAFile); err != nil {
		errs = append(errs, err)
	}
	// A missing key file is created on first use (unless accounts exist,
	// which openAccounts checks against Redis), so its directory must let
	// this user create it; a present one must be usable.
	if _, err := oauth.LoadKey(cfg.Secrets.KeyFile); errors.Is(err, fs.ErrNotExist) {
		if err := canCreate(cfg.Secrets.KeyFile); err != nil {
			errs = append(errs, fmt.Errorf("secrets.key_file: %s does not exist and cannot be created (%v): set secrets.key_file to a file in a directory this user owns, e.g. the state directory", cfg.Secrets.KeyFile, err))
		}
	} else if err != nil {
		errs = append(errs, fmt.Errorf("secrets.key_file: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		return cli.Exit(err, exitConfig)
	}
	return nil
}

// canCreate reports whether this process may create path: its directory
// (or the nearest one that exists, which mailgate would create the rest
// under) must be writable. access(2) asks the kernel with the process's
// own user, so root, ACLs and read-only mounts are judged as at creation.
func canCreate(path string) error {
	dir := filepath.Dir(path)
	for {
		_, err := os.Stat(dir)
		if err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if !errors.Is(err, fs.ErrNotExist) || parent == dir {
			return err
		}
		dir = parent
	}
	if err := unix.Access(dir, unix.W_OK|unix.X_OK); err != nil {
		return fmt.Errorf("%s: %w", dir, err)
	}
	return nil
}
