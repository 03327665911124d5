package hcloudfake

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"
)

// serveAdmin handles the test-control endpoints under /_admin/ (no token):
//
//	POST   /_admin/servers       {"name":"n1","labels":{"role":"worker"}} -> {"id":1001}
//	POST   /_admin/faults        {"status":429,"count":3,"method":"POST","path":"/firewalls"}
//	DELETE /_admin/faults        clear faults and pending action failures
//	PUT    /_admin/action_delay  {"delay":"2s"}
//	POST   /_admin/fail_actions  {"count":1}
//	GET    /_admin/requests      recorded /v1 requests
//	GET    /_admin/firewalls     firewall snapshots
func (f *Fake) serveAdmin(w http.ResponseWriter, r *http.Request) {
	write := func(status int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(v)
	}
	fail := func(err error) { write(http.StatusBadRequest, map[string]string{"error": err.Error()}) }
	dec := json.NewDecoder(r.Body)
	switch r.Method + " " + r.URL.Path {
	case "POST /_admin/servers":
		var req struct {
			Name   string            `json:"name"`
			Labels map[string]string `json:"labels"`
		}
		if err := dec.Decode(&req); err != nil || req.Name == "" {
			fail(fmt.Errorf("hcloudfake admin: want {\"name\":...,\"labels\":{...}}: %v", err))
			return
		}
		write(http.StatusCreated, map[string]int64{"id": f.AddServer(req.Name, req.Labels)})
	case "POST /_admin/faults":
		var ft Fault
		if err := dec.Decode(&ft); err != nil || ft.Status < 400 || ft.Count < 1 {
			fail(fmt.Errorf("hcloudfake admin: want {\"status\":429,\"count\":3}: %v", err))
			return
		}
		f.Inject(ft)
		write(http.StatusCreated, ft)
	case "DELETE /_admin/faults":
		f.ClearFaults()
		w.WriteHeader(http.StatusNoContent)
	case "PUT /_admin/action_delay":
		var req struct {
			Delay string `json:"delay"`
		}
		d, err := time.Duration(0), dec.Decode(&req)
		if err == nil {
			d, err = time.ParseDuration(req.Delay)
		}
		if err != nil {
			fail(fmt.Errorf("hcloudfake admin: want {\"delay\":\"2s\"}: %w", err))
			return
		}
		f.SetActionDelay(d)
		write(http.StatusOK, map[string]string{"delay": d.String()})
	case "POST /_admin/fail_actions":
		var req struct {
			Count int `json:"count"`
		}
		if err := dec.Decode(&req); err != nil {
			fail(fmt.Errorf("hcloudfake admin: want {\"count\":1}: %w", err))
			return
		}
		f.FailActions(req.Count)
		write(http.StatusOK, req)
	case "GET /_admin/requests":
		write(http.StatusOK, f.Requests())
	case "GET /_admin/firewalls":
		write(http.StatusOK, f.Firewalls())
	default:
		write(http.StatusNotFound, map[string]string{"error": "unknown admin endpoint " + r.Method + " " + r.URL.Path})
	}
}
