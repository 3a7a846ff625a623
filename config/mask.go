package config

import (
	"net/url"
	"reflect"
	"strings"
)

// masked replaces secrets in Masked's copy.
const masked = "********"

// Masked returns a deep copy of c with every non-empty secret replaced by
// "********", and the password of redis.url likewise, for printing.
func (c *Config) Masked() *Config {
	cp := *c
	v := reflect.ValueOf(&cp).Elem()
	deepCopy(v)
	mask(v)
	return &cp
}

// deepCopy gives v's slices fresh backing arrays so that a shallow copy
// shares nothing with its original.
func deepCopy(v reflect.Value) {
	switch v.Kind() {
	case reflect.Struct:
		for i := range v.NumField() {
			deepCopy(v.Field(i))
		}
	case reflect.Slice:
		if v.IsNil() {
			return
		}
		s := reflect.MakeSlice(v.Type(), v.Len(), v.Len())
		reflect.Copy(s, v)
		for i := range s.Len() {
			deepCopy(s.Index(i))
		}
		v.Set(s)
	}
}

// mask hides the fields tagged secret:"true" (whole value) or secret:"url"
// (the password of a URL).
func mask(v reflect.Value) {
	switch v.Kind() {
	case reflect.Struct:
		t := v.Type()
		for i := range v.NumField() {
			f := v.Field(i)
			switch t.Field(i).Tag.Get("secret") {
			case "true":
				if f.String() != "" {
					f.SetString(masked)
				}
			case "url":
				f.SetString(maskURL(f.String()))
			default:
				mask(f)
			}
		}
	case reflect.Slice:
		for i := range v.Len() {
			mask(v.Index(i))
		}
	}
}

func maskURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		// Unparseable: it might hold a password anywhere.
		if strings.Contains(s, "@") {
			return masked
		}
		return s
	}
	if _, ok := u.User.Password(); !ok {
		return s
	}
	// url escapes '*' in a password, so put in a plain placeholder first.
	const placeholder = "MASKED"
	u.User = url.UserPassword(u.User.Username(), placeholder)
	return strings.Replace(u.String(), ":"+placeholder+"@", ":"+masked+"@", 1)
}
