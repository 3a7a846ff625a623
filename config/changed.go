package config

import (
	"bytes"
	"fmt"
	"reflect"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// Changed lists, as "key: value" lines sorted by key, the settings of c
// that differ from Defaults, as postconf -n does for Postfix: what this
// installation chose, secrets masked. configFile and environ are those c
// was loaded with, so the default key file resolves to the same place and
// is not reported as a change. A list (accounts, dkim.keys) is one key.
func (c *Config) Changed(configFile string, environ []string) ([]string, error) {
	def := Defaults()
	def.ResolvePaths(configFile, environ)
	have, err := flatten(c)
	if err != nil {
		return nil, err
	}
	base, err := flatten(def)
	if err != nil {
		return nil, err
	}
	shown, err := flatten(c.Masked())
	if err != nil {
		return nil, err
	}
	var lines []string
	for k, v := range have {
		if reflect.DeepEqual(v, base[k]) {
			continue
		}
		out, err := yaml.Marshal(shown[k])
		if err != nil {
			return nil, fmt.Errorf("encode %s: %w", k, err)
		}
		lines = append(lines, k+": "+inline(out))
	}
	sort.Strings(lines)
	return lines, nil
}

// flatten maps every leaf key of c's YAML form, dotted ("relay.listen"),
// to its value; lists stay whole.
func flatten(c *Config) (map[string]any, error) {
	data, err := c.YAML()
	if err != nil {
		return nil, err
	}
	var root map[string]any
	if err := yaml.NewDecoder(bytes.NewReader(data)).Decode(&root); err != nil {
		return nil, fmt.Errorf("decode config: %w", err)
	}
	out := map[string]any{}
	var walk func(prefix string, m map[string]any)
	walk = func(prefix string, m map[string]any) {
		for k, v := range m {
			if sub, ok := v.(map[string]any); ok {
				walk(prefix+k+".", sub)
				continue
			}
			out[prefix+k] = v
		}
	}
	walk("", root)
	return out, nil
}

// inline writes a YAML value on one line: flow style for lists and maps.
func inline(block []byte) string {
	s := strings.TrimSpace(string(block))
	if !strings.Contains(s, "\n") {
		return s
	}
	var n yaml.Node
	if err := yaml.Unmarshal(block, &n); err != nil {
		return s
	}
	setFlow(&n)
	out, err := yaml.Marshal(&n)
	if err != nil {
		return s
	}
	return strings.TrimSpace(string(out))
}

func setFlow(n *yaml.Node) {
	if n.Kind == yaml.SequenceNode || n.Kind == yaml.MappingNode {
		n.Style = yaml.FlowStyle
	}
	for _, c := range n.Content {
		setFlow(c)
	}
}
