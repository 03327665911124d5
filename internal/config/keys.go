package config

import (
	"fmt"
	"reflect"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// UnknownKeyError is a key the schema does not have, with where it is and
// the valid key it most likely meant.
type UnknownKeyError struct {
	File string // set by Load
	Line int
	Path string // dotted, e.g. wireguard.listenport
	Key  string
	// Suggest is the nearest valid key at that level, or "" when none is
	// close; Valid lists them all.
	Suggest string
	Valid   []string
}

func (e *UnknownKeyError) Error() string {
	where := fmt.Sprintf("config: line %d", e.Line)
	if e.File != "" {
		where = fmt.Sprintf("%s:%d", e.File, e.Line)
	}
	msg := where + ": unknown key " + e.Path
	if e.Suggest != "" {
		return msg + "; did you mean " + e.Suggest + "?"
	}
	return msg + "; valid keys here: " + strings.Join(e.Valid, ", ")
}

// unknownKey finds the first key in doc (in document order) that t has no
// field for. yaml.v3's own error for it spans several lines and names Go
// types; this one names the key, its line and the fix.
func unknownKey(doc *yaml.Node, t reflect.Type) *UnknownKeyError {
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		doc = doc.Content[0]
	}
	return walkKeys(doc, t, "")
}

var unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()

func walkKeys(n *yaml.Node, t reflect.Type, path string) *UnknownKeyError {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	// Types that decode themselves take whatever they take.
	if reflect.PointerTo(t).Implements(unmarshalerType) || hasLegacyUnmarshal(t) {
		return nil
	}
	switch {
	case t.Kind() == reflect.Struct && n.Kind == yaml.MappingNode:
		fields := yamlFields(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := k.Value
			if path != "" {
				p = path + "." + k.Value
			}
			ft, ok := fields[k.Value]
			if !ok {
				valid := make([]string, 0, len(fields))
				for name := range fields {
					valid = append(valid, name)
				}
				sort.Strings(valid)
				return &UnknownKeyError{Line: k.Line, Path: p, Key: k.Value, Suggest: nearest(k.Value, valid), Valid: valid}
			}
			if e := walkKeys(v, ft, p); e != nil {
				return e
			}
		}
	case (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) && n.Kind == yaml.SequenceNode:
		for i, item := range n.Content {
			if e := walkKeys(item, t.Elem(), fmt.Sprintf("%s[%d]", path, i)); e != nil {
				return e
			}
		}
	}
	return nil
}

func hasLegacyUnmarshal(t reflect.Type) bool {
	_, ok := reflect.PointerTo(t).MethodByName("UnmarshalYAML")
	return ok
}

// yamlFields maps each YAML key of struct t to its field type, as yaml.v3
// names them (the tag's name, else the lowercased field name; inline
// structs contribute their own keys; "-" is skipped).
func yamlFields(t reflect.Type) map[string]reflect.Type {
	m := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("yaml")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if strings.Contains(","+opts+",", ",inline,") {
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				for k, v := range yamlFields(ft) {
					m[k] = v
				}
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		m[name] = f.Type
	}
	return m
}

// nearest is the valid key closest to key, if it is close enough to be a
// typo: the same but for case, or within a third of its length in edits.
func nearest(key string, valid []string) string {
	best, bestD := "", -1
	for _, v := range valid {
		if strings.EqualFold(v, key) {
			return v
		}
		d := editDistance(strings.ToLower(key), strings.ToLower(v))
		if bestD < 0 || d < bestD {
			best, bestD = v, d
		}
	}
	if bestD >= 0 && bestD <= max(1, len(key)/3) {
		return best
	}
	return ""
}

// editDistance is the Levenshtein distance, counting an adjacent swap as
// one edit (the commonest typo).
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev2 := make([]int, len(rb)+1)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(rb)]
}

// withPath puts the file name in front of a parse error; an unknown key
// reads path:line, so editors can jump to it.
func withPath(path string, err error) error {
	if ke, ok := err.(*UnknownKeyError); ok {
		c := *ke
		c.File = path
		return &c
	}
	return fmt.Errorf("%s: %w", path, err)
}
