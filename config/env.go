package config

import (
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
)

// Environment variables: MAILGATE_<SECTION>_<KEY>, the dotted key upper-cased
// with dots as underscores (relay.listen is MAILGATE_RELAY_LISTEN).
const (
	EnvPrefix = "MAILGATE_"
	// EnvConfig names the config file. It is read by the CLI, not by Load,
	// and is the one MAILGATE_ variable that is not a key.
	EnvConfig = "MAILGATE_CONFIG"
)

var durationType = reflect.TypeFor[Duration]()

// field is one leaf key of Config, found through the yaml tags.
type field struct {
	key   string
	index []int
	typ   reflect.Type
}

// settable reports whether Set can parse a string into the field. Lists of
// entries (relay.users, dkim.keys) need the file's structure.
func (f field) settable() bool {
	return !(f.typ.Kind() == reflect.Slice && f.typ.Elem().Kind() == reflect.Struct)
}

// fields lists every leaf key of Config in struct order.
func fields() []field {
	var out []field
	var walk func(t reflect.Type, prefix string, index []int)
	walk = func(t reflect.Type, prefix string, index []int) {
		for i := range t.NumField() {
			sf := t.Field(i)
			name := yamlName(sf)
			if name == "" {
				continue
			}
			idx := append(append([]int(nil), index...), i)
			if sf.Type.Kind() == reflect.Struct {
				walk(sf.Type, prefix+name+".", idx)
				continue
			}
			out = append(out, field{key: prefix + name, index: idx, typ: sf.Type})
		}
	}
	walk(reflect.TypeFor[Config](), "", nil)
	return out
}

func yamlName(sf reflect.StructField) string {
	if !sf.IsExported() {
		return ""
	}
	name, _, _ := strings.Cut(sf.Tag.Get("yaml"), ",")
	if name == "-" {
		return ""
	}
	return name
}

func lookup(key string) (field, bool) {
	for _, f := range fields() {
		if f.key == key {
			return f, true
		}
	}
	return field{}, false
}

// Keys returns every dotted key that Set accepts, sorted. The lists of
// entries relay.users and dkim.keys are left out: only the file sets them.
func Keys() []string {
	var keys []string
	for _, f := range fields() {
		if f.settable() {
			keys = append(keys, f.key)
		}
	}
	sort.Strings(keys)
	return keys
}

// EnvVar returns the environment variable that overrides key.
func EnvVar(key string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// Set parses value into the dotted key, as an env var or CLI flag would:
// durations like "5m", booleans true/false, lists comma-separated ("" is an
// empty list).
func (c *Config) Set(key, value string) error {
	f, ok := lookup(key)
	if !ok {
		return fmt.Errorf("%s: unknown key%s", key, suggest(key, allKeys()))
	}
	if !f.settable() {
		return fmt.Errorf("%s: is a list of entries; set it in the config file, not from the environment or a flag", key)
	}
	v := reflect.ValueOf(c).Elem().FieldByIndex(f.index)
	if v.Kind() == reflect.Slice {
		var items []string
		for item := range strings.SplitSeq(value, ",") {
			if item = strings.TrimSpace(item); item != "" {
				items = append(items, item)
			}
		}
		if len(items) == 0 {
			v.Set(reflect.Zero(v.Type()))
			return nil
		}
		s := reflect.MakeSlice(v.Type(), len(items), len(items))
		for i, item := range items {
			if err := parseScalar(s.Index(i), item); err != nil {
				return fmt.Errorf("%s[%d]: %w", key, i, err)
			}
		}
		v.Set(s)
		return nil
	}
	if err := parseScalar(v, value); err != nil {
		return fmt.Errorf("%s: %w", key, err)
	}
	return nil
}

func allKeys() []string {
	var keys []string
	for _, f := range fields() {
		keys = append(keys, f.key)
	}
	return keys
}

// parseScalar parses one value of a leaf's type. Its errors quote the
// value, so it must never see a secret that can fail to parse: all secrets
// are strings, which always parse.
func parseScalar(v reflect.Value, s string) error {
	if v.Type() == durationType {
		d, err := parseDuration(s)
		if err != nil {
			return err
		}
		v.SetInt(int64(d))
		return nil
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(s)
	case reflect.Bool:
		b, err := strconv.ParseBool(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("invalid boolean %q (want true or false)", s)
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int64:
		n, err := strconv.ParseInt(strings.ReplaceAll(strings.TrimSpace(s), "_", ""), 10, v.Type().Bits())
		if err != nil {
			return fmt.Errorf("invalid integer %q", s)
		}
		v.SetInt(n)
	case reflect.Float64:
		n, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil {
			return fmt.Errorf("invalid number %q", s)
		}
		v.SetFloat(n)
	default:
		// Only reachable if a field of a new type is added to Config.
		return fmt.Errorf("unsupported type %s", v.Type())
	}
	return nil
}

// applyEnv applies every MAILGATE_* variable of environ.
func (c *Config) applyEnv(environ []string) error {
	byEnv := map[string]string{}
	var names []string
	for _, k := range allKeys() {
		byEnv[EnvVar(k)] = k
		names = append(names, EnvVar(k))
	}
	var errs []error
	for _, kv := range environ {
		name, value, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(name, EnvPrefix) || name == EnvConfig {
			continue
		}
		key, ok := byEnv[name]
		if !ok {
			errs = append(errs, fmt.Errorf("%s: unknown environment variable; mailgate reads %s and %s<SECTION>_<KEY>%s",
				name, EnvConfig, EnvPrefix, suggest(name, names)))
			continue
		}
		if err := c.Set(key, value); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

// suggest returns ` (did you mean "x"?)` for the candidate closest to s, or
// "" if none is close: a typo costs an admin a restart cycle.
func suggest(s string, candidates []string) string {
	best, bestDist := "", 3
	for _, c := range candidates {
		if d := editDistance(strings.ToLower(s), strings.ToLower(c)); d < bestDist {
			best, bestDist = c, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
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
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
