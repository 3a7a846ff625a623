package main

import (
	"errors"
	"fmt"
	"io/fs"

	"github.com/urfave/cli/v2"

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
	// which openAccounts checks against Redis); a present one must be
	// usable.
	if _, err := oauth.LoadKey(cfg.Secrets.KeyFile); err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, fmt.Errorf("secrets.key_file: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		return cli.Exit(err, exitConfig)
	}
	return nil
}
