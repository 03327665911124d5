package vmlab

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"time"
)

// The QEMU guest agent (qemu-guest-agent, a stock Debian package) answers
// JSON commands on a virtio serial port; QEMU exposes it as a unix socket.
// It runs commands inside the VM without the network, which is what the
// tests examine (and firewall).

type qgaReply struct {
	Return json.RawMessage `json:"return"`
	Error  *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error"`
}

type qgaConn struct {
	c   net.Conn
	r   *bufio.Reader
	dec *json.Decoder // replies after the sync
}

func (v *VM) dialQGA(ctx context.Context) (*qgaConn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", v.qgaPath)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	q := &qgaConn{c: c, r: bufio.NewReader(c)}
	// guest-sync-delimited: the agent answers with 0xFF then our id, which
	// flushes anything a timed-out earlier conversation left in the pipe.
	id := rand.Int64N(1 << 40)
	if err := q.send("guest-sync-delimited", map[string]any{"id": id}); err != nil {
		c.Close()
		return nil, err
	}
	for {
		b, err := q.r.ReadByte()
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("guest agent not answering: %w", err)
		}
		if b != 0xFF {
			continue
		}
		var rep qgaReply
		dec := json.NewDecoder(q.r)
		err = dec.Decode(&rep)
		// Keep what the decoder read ahead: the next 0xFF may be in it.
		q.r = bufio.NewReader(io.MultiReader(dec.Buffered(), q.r))
		var got int64
		if err == nil && json.Unmarshal(rep.Return, &got) == nil && got == id {
			q.dec = json.NewDecoder(q.r)
			return q, nil
		}
		var ne net.Error
		if errors.As(err, &ne) || errors.Is(err, io.EOF) {
			c.Close()
			return nil, fmt.Errorf("guest agent not answering: %w", err)
		}
	}
}

func (q *qgaConn) send(cmd string, args any) error {
	b, err := json.Marshal(map[string]any{"execute": cmd, "arguments": args})
	if err != nil {
		return err
	}
	_, err = q.c.Write(append(b, '\n'))
	return err
}

func (q *qgaConn) call(cmd string, args, out any) error {
	if err := q.send(cmd, args); err != nil {
		return err
	}
	var rep qgaReply
	if err := q.dec.Decode(&rep); err != nil {
		return fmt.Errorf("guest agent %s: %w", cmd, err)
	}
	if rep.Error != nil {
		return fmt.Errorf("guest agent %s: %s: %s", cmd, rep.Error.Class, rep.Error.Desc)
	}
	return json.Unmarshal(rep.Return, out)
}

// Run runs script with /bin/sh -c inside the VM and returns its stdout and
// stderr together; the error is set when it exits non-zero or cannot run.
func (v *VM) Run(ctx context.Context, script string) (string, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
	}
	q, err := v.dialQGA(ctx)
	if err != nil {
		return "", fmt.Errorf("vmlab: %s: %w", v.cfg.Name, err)
	}
	defer q.c.Close()
	var started struct {
		PID int `json:"pid"`
	}
	if err := q.call("guest-exec", map[string]any{
		"path": "/bin/sh", "arg": []string{"-c", script}, "capture-output": true,
		"env": []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C"},
	}, &started); err != nil {
		return "", fmt.Errorf("vmlab: %s: %w", v.cfg.Name, err)
	}
	for {
		var st struct {
			Exited   bool   `json:"exited"`
			ExitCode int    `json:"exitcode"`
			Signal   int    `json:"signal"`
			Out      string `json:"out-data"`
			Err      string `json:"err-data"`
		}
		if err := q.call("guest-exec-status", map[string]any{"pid": started.PID}, &st); err != nil {
			return "", fmt.Errorf("vmlab: %s: %w", v.cfg.Name, err)
		}
		if st.Exited {
			o, _ := base64.StdEncoding.DecodeString(st.Out)
			e, _ := base64.StdEncoding.DecodeString(st.Err)
			out := string(o) + string(e)
			if st.ExitCode != 0 || st.Signal != 0 {
				return out, fmt.Errorf("vmlab: %s: %q exited %d (signal %d): %s", v.cfg.Name, script, st.ExitCode, st.Signal, strings.TrimSpace(out))
			}
			return out, nil
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("vmlab: %s: %q: %w", v.cfg.Name, script, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}
