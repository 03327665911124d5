package dofake

import (
	"encoding/json"
	"net/http"
)

// adminRoutes are the standalone controls, unauthenticated and outside the
// API's /v2/ namespace:
//
//	POST /_dofake/droplets {"id":1,"name":"web-1"}   make a droplet exist
//	POST /_dofake/tags     {"name":"mesh"}           make a tag exist
//	POST /_dofake/faults   {"status":429,"count":3,"retry_after":1,"method":"GET","path":"/v2/firewalls"}
//	POST /_dofake/slow     {"reads":3}               status "waiting" for 3 GETs after each change
//	GET  /_dofake/firewalls                          every stored firewall
//	GET  /_dofake/requests                           the API request log
func (s *Server) adminRoutes() {
	admin := func(pattern string, fn func(r *http.Request) (any, error)) {
		s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			v, err := fn(r)
			if err != nil {
				http.Error(w, "dofake admin: "+err.Error(), http.StatusBadRequest)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(v)
		})
	}
	admin("POST /_dofake/droplets", func(r *http.Request) (any, error) {
		var d struct {
			ID   int    `json:"id"`
			Name string `json:"name"`
		}
		if err := json.NewDecoder(r.Body).Decode(&d); err != nil {
			return nil, err
		}
		s.AddDroplet(d.ID, d.Name)
		return d, nil
	})
	admin("POST /_dofake/tags", func(r *http.Request) (any, error) {
		var t struct {
			Name string `json:"name"`
		}
		if err := json.NewDecoder(r.Body).Decode(&t); err != nil {
			return nil, err
		}
		s.AddTag(t.Name)
		return t, nil
	})
	admin("POST /_dofake/faults", func(r *http.Request) (any, error) {
		var f Fault
		if err := json.NewDecoder(r.Body).Decode(&f); err != nil {
			return nil, err
		}
		s.InjectFault(f)
		return f, nil
	})
	admin("POST /_dofake/slow", func(r *http.Request) (any, error) {
		var v struct {
			Reads int `json:"reads"`
		}
		if err := json.NewDecoder(r.Body).Decode(&v); err != nil {
			return nil, err
		}
		s.SetSlowStatus(v.Reads)
		return v, nil
	})
	admin("GET /_dofake/firewalls", func(*http.Request) (any, error) { return s.Firewalls(), nil })
	admin("GET /_dofake/requests", func(*http.Request) (any, error) {
		type entry struct {
			Method string          `json:"method"`
			Path   string          `json:"path"`
			Query  string          `json:"query,omitempty"`
			Status int             `json:"status"`
			Body   json.RawMessage `json:"body,omitempty"`
		}
		var out []entry
		for _, q := range s.Requests() {
			e := entry{Method: q.Method, Path: q.Path, Query: q.Query, Status: q.Status}
			if json.Valid(q.Body) {
				e.Body = q.Body
			}
			out = append(out, e)
		}
		return out, nil
	})
}
