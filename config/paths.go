package config

import (
	"path/filepath"
	"strings"
)

// DefaultKeyName is the key file's name in its default directory.
const DefaultKeyName = "mailgate.key"

// ResolvePaths makes every file path of the configuration absolute, so a
// command run from another working directory reads the same files. A
// relative path is taken against the directory of configFile, as most
// daemons do; with no configuration file, against the working directory.
//
// An empty secrets.key_file gets the default home: $STATE_DIRECTORY (set
// by systemd's StateDirectory=) when set, else next to the configuration
// file, else ~/.local/state/mailgate. environ is os.Environ's format.
// Absolute paths are left as they are, so calling it twice is harmless.
func (c *Config) ResolvePaths(configFile string, environ []string) {
	base := "."
	if configFile != "" {
		base = filepath.Dir(configFile)
	}
	if abs, err := filepath.Abs(base); err == nil {
		base = abs
	}
	if c.Secrets.KeyFile == "" {
		c.Secrets.KeyFile = defaultKeyFile(configFile, base, environ)
	}
	for _, p := range c.paths() {
		*p = resolvePath(base, *p)
	}
}

// paths lists every key that names a file: the one list ResolvePaths
// goes through.
func (c *Config) paths() []*string {
	ps := []*string{&c.Secrets.KeyFile, &c.Google.CAFile, &c.Relay.TLSCert, &c.Relay.TLSKey}
	for i := range c.DKIM.Keys {
		ps = append(ps, &c.DKIM.Keys[i].PrivateKeyFile)
	}
	return ps
}

// resolvePath returns p against base; empty stays empty (the key is unset).
func resolvePath(base, p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(base, p)
}

func defaultKeyFile(configFile, base string, environ []string) string {
	// systemd may list several state directories, separated by colons.
	if dir, _, _ := strings.Cut(getenv(environ, "STATE_DIRECTORY"), ":"); dir != "" {
		return filepath.Join(dir, DefaultKeyName)
	}
	if configFile != "" {
		return filepath.Join(base, DefaultKeyName)
	}
	if home := getenv(environ, "HOME"); home != "" {
		return filepath.Join(home, ".local", "state", "mailgate", DefaultKeyName)
	}
	return filepath.Join(base, DefaultKeyName)
}

func getenv(environ []string, name string) string {
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && k == name {
			return v
		}
	}
	return ""
}
