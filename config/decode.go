package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"

	"gopkg.in/yaml.v3"
)

// parseFile parses the one YAML document in data. It returns nil for an
// empty file, which means all defaults.
func parseFile(name string, data []byte) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case err == nil:
		return nil, fmt.Errorf("%s:%d: more than one YAML document; mailgate reads one", name, extra.Line)
	case !errors.Is(err, io.EOF):
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if doc.Kind == yaml.DocumentNode {
		if len(doc.Content) == 0 {
			return nil, nil
		}
		return doc.Content[0], nil
	}
	return &doc, nil
}

// decodeNode applies a parsed file over c. It walks the node tree itself
// rather than using yaml.Decoder.KnownFields so that every error names the
// file, line and dotted key ("mailgate.yaml:3: relay.listn: unknown key"),
// and so that all problems of a file are reported together. A key that
// fails to decode keeps its previous value.
//
// A key written without a value (`key:` or `key: ~`) keeps its default;
// write "" or [] to empty it.
func decodeNode(name string, root *yaml.Node, c *Config) error {
	if root == nil {
		return nil
	}
	d := &decoder{file: name}
	d.decode(root, reflect.ValueOf(c).Elem(), "", 0)
	return errors.Join(d.errs...)
}

type decoder struct {
	file    string
	errs    []error
	steps   int
	aborted bool
}

// maxDepth bounds alias and merge chains and maxSteps the nodes visited, so
// that a file of aliases to aliases cannot expand exponentially; the config
// is three levels deep and a few hundred nodes.
const (
	maxDepth = 32
	maxSteps = 100_000
)

// budget counts one step and reports whether decoding may go on. Once over
// budget it stops for good, with one error rather than one per branch.
func (d *decoder) budget(n *yaml.Node, path string, depth int) bool {
	if d.aborted {
		return false
	}
	d.steps++
	switch {
	case d.steps > maxSteps:
		d.fail(n, path, "file too complex (aliases expand to over %d nodes)", maxSteps)
	case depth > maxDepth:
		d.fail(n, path, "aliases or merges nested too deeply")
	default:
		return true
	}
	d.aborted = true
	return false
}

func (d *decoder) fail(n *yaml.Node, path, format string, args ...any) {
	if path == "" {
		path = "top level"
	}
	d.errs = append(d.errs, fmt.Errorf("%s:%d: %s: %s", d.file, n.Line, path, fmt.Sprintf(format, args...)))
}

func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string, depth int) {
	if !d.budget(n, path, depth) {
		return
	}
	if n.Kind == yaml.AliasNode {
		d.decode(n.Alias, v, path, depth+1)
		return
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return
	}
	switch {
	case v.Kind() == reflect.Struct:
		d.mapping(n, v, path, depth)
	case v.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.fail(n, path, "want a list (e.g. [a, b]), got %s", nodeKind(n))
			return
		}
		if len(n.Content) == 0 {
			v.Set(reflect.Zero(v.Type()))
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		before := len(d.errs)
		for i, item := range n.Content {
			d.decode(item, s.Index(i), fmt.Sprintf("%s[%d]", path, i), depth+1)
		}
		// Keep the old list if an item failed: half a list would only
		// add validation errors about the zero values.
		if len(d.errs) == before {
			v.Set(s)
		}
	default:
		if n.Kind != yaml.ScalarNode {
			d.fail(n, path, "want %s, got %s", want(v.Type()), nodeKind(n))
			return
		}
		if err := parseScalar(v, n.Value); err != nil {
			d.fail(n, path, "%v", err)
		}
	}
}

// mapping applies a YAML mapping onto struct v, matching keys to yaml tags.
func (d *decoder) mapping(n *yaml.Node, v reflect.Value, path string, depth int) {
	if n.Kind != yaml.MappingNode {
		d.fail(n, path, "want a mapping of keys, got %s", nodeKind(n))
		return
	}
	// Merge keys (<<: *anchor) first, so the mapping's own keys win as
	// YAML's merge key type specifies.
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k := n.Content[i]; k.ShortTag() == "!!merge" {
			d.merge(n.Content[i+1], v, path, depth+1)
		}
	}
	byName := map[string][]int{}
	var names []string
	for i := range v.NumField() {
		if name := yamlName(v.Type().Field(i)); name != "" {
			byName[name] = []int{i}
			names = append(names, name)
		}
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.ShortTag() == "!!merge" {
			continue
		}
		if k.Kind != yaml.ScalarNode {
			d.fail(k, path, "keys must be plain names, got %s", nodeKind(k))
			continue
		}
		p := k.Value
		if path != "" {
			p = path + "." + k.Value
		}
		if line, dup := seen[k.Value]; dup {
			d.fail(k, p, "duplicate key (first set on line %d)", line)
			continue
		}
		seen[k.Value] = k.Line
		idx, ok := byName[k.Value]
		if !ok {
			d.fail(k, p, "unknown key%s", suggest(k.Value, names))
			continue
		}
		d.decode(val, v.FieldByIndex(idx), p, depth+1)
	}
}

func (d *decoder) merge(n *yaml.Node, v reflect.Value, path string, depth int) {
	if !d.budget(n, path, depth) {
		return
	}
	switch n.Kind {
	case yaml.AliasNode:
		d.merge(n.Alias, v, path, depth+1)
	case yaml.SequenceNode:
		// Earlier mappings in a merge list win, so apply them last.
		for i := len(n.Content) - 1; i >= 0; i-- {
			d.merge(n.Content[i], v, path, depth+1)
		}
	default:
		d.mapping(n, v, path, depth)
	}
}

func nodeKind(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return fmt.Sprintf("%q", n.Value)
	case yaml.AliasNode:
		return "an alias"
	}
	return "nothing"
}

func want(t reflect.Type) string {
	if t == durationType {
		return `a duration like "30s"`
	}
	switch t.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int64:
		return "an integer"
	case reflect.Float64:
		return "a number"
	}
	return "a string"
}
