package discovery

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// The snapshot file is the reference service's StateSnapshot (fact sheet
// section 2), written one cluster record at a time, so a snapshot taken by a
// Sidero discovery service can be imported and ours read back by it:
//
//	StateSnapshot     { repeated ClusterSnapshot clusters = 1; }
//	ClusterSnapshot   { string id = 1; repeated AffiliateSnapshot affiliates = 2; }
//	AffiliateSnapshot { string id = 1; Timestamp expiration = 2; bytes data = 3;
//	                    repeated EndpointSnapshot endpoints = 4; Duration ttl = 5; }
//	EndpointSnapshot  { Timestamp expiration = 1; bytes data = 2; Duration ttl = 3; }
//
// Encoded by hand with protowire: the schema is not in discovery-api.

// maxSnapshotRecord bounds one cluster record, as the reference does.
const maxSnapshotRecord = 137_912_579

type snapCluster struct {
	id         string
	affiliates []snapAffiliate
}

type snapAffiliate struct {
	id        string
	data      []byte
	expires   time.Time
	endpoints []snapEndpoint
}

type snapEndpoint struct {
	data    []byte
	expires time.Time
}

func appendTimestamp(b []byte, num protowire.Number, t time.Time) []byte {
	var m []byte
	if s := t.Unix(); s != 0 {
		m = protowire.AppendTag(m, 1, protowire.VarintType)
		m = protowire.AppendVarint(m, uint64(s))
	}
	if n := t.Nanosecond(); n != 0 {
		m = protowire.AppendTag(m, 2, protowire.VarintType)
		m = protowire.AppendVarint(m, uint64(n))
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, m)
}

// appendTTL writes the remaining lifetime. The reference truncates it to
// whole seconds; we keep the nanoseconds (a valid Duration either way) so a
// restore loses nothing that had not yet expired.
func appendTTL(b []byte, num protowire.Number, remaining time.Duration) []byte {
	var m []byte
	if s := int64(remaining / time.Second); s != 0 {
		m = protowire.AppendTag(m, 1, protowire.VarintType)
		m = protowire.AppendVarint(m, uint64(s))
	}
	if n := int64(remaining % time.Second); n != 0 {
		m = protowire.AppendTag(m, 2, protowire.VarintType)
		m = protowire.AppendVarint(m, uint64(n))
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, m)
}

// appendClusterRecord appends one StateSnapshot.clusters record.
func appendClusterRecord(b []byte, c snapCluster, now time.Time) []byte {
	var cm []byte
	cm = protowire.AppendTag(cm, 1, protowire.BytesType)
	cm = protowire.AppendString(cm, c.id)
	for _, a := range c.affiliates {
		var am []byte
		am = protowire.AppendTag(am, 1, protowire.BytesType)
		am = protowire.AppendString(am, a.id)
		am = appendTimestamp(am, 2, a.expires)
		if len(a.data) > 0 {
			am = protowire.AppendTag(am, 3, protowire.BytesType)
			am = protowire.AppendBytes(am, a.data)
		}
		for _, ep := range a.endpoints {
			var em []byte
			em = appendTimestamp(em, 1, ep.expires)
			em = protowire.AppendTag(em, 2, protowire.BytesType)
			em = protowire.AppendBytes(em, ep.data)
			em = appendTTL(em, 3, ep.expires.Sub(now))
			am = protowire.AppendTag(am, 4, protowire.BytesType)
			am = protowire.AppendBytes(am, em)
		}
		am = appendTTL(am, 5, a.expires.Sub(now))
		cm = protowire.AppendTag(cm, 2, protowire.BytesType)
		cm = protowire.AppendBytes(cm, am)
	}
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	return protowire.AppendBytes(b, cm)
}

var errSnapshotFormat = errors.New("malformed snapshot")

// fields walks a message's fields, handing each to fn; fn returns false for
// fields it does not know (they are skipped).
func fields(b []byte, fn func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("%w: %v", errSnapshotFormat, protowire.ParseError(n))
		}
		b = b[n:]
		var (
			v []byte
			x uint64
		)
		switch typ {
		case protowire.BytesType:
			v, n = protowire.ConsumeBytes(b)
		case protowire.VarintType:
			x, n = protowire.ConsumeVarint(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return fmt.Errorf("%w: field %d: %v", errSnapshotFormat, num, protowire.ParseError(n))
		}
		b = b[n:]
		if err := fn(num, typ, v, x); err != nil {
			return err
		}
	}
	return nil
}

// decodeTime reads a Timestamp or Duration (both: seconds=1, nanos=2).
func decodeTime(b []byte) (sec int64, nanos int64, err error) {
	err = fields(b, func(num protowire.Number, typ protowire.Type, _ []byte, x uint64) error {
		if typ != protowire.VarintType {
			return nil
		}
		switch num {
		case 1:
			sec = int64(x)
		case 2:
			nanos = int64(int32(x))
		}
		return nil
	})
	return sec, nanos, err
}

// expiry resolves a snapshot entry's expiry. The reference prefers ttl
// (remaining lifetime at write time, immune to clock changes) and falls back
// to the absolute expiration; when both are present we take the earlier, so
// time spent down between snapshot and restore still counts.
func expiry(now time.Time, ttl, exp []byte, haveTTL, haveExp bool) (time.Time, error) {
	var out time.Time
	if haveTTL {
		s, n, err := decodeTime(ttl)
		if err != nil {
			return time.Time{}, err
		}
		s = min(max(s, -1), int64(TTLCeiling/time.Second))
		out = now.Add(time.Duration(s)*time.Second + time.Duration(n))
	}
	if haveExp {
		s, n, err := decodeTime(exp)
		if err != nil {
			return time.Time{}, err
		}
		if abs := time.Unix(s, n); !haveTTL || abs.Before(out) {
			out = abs
		}
	}
	if ceil := now.Add(TTLCeiling); out.After(ceil) {
		out = ceil
	}
	return out, nil
}

// TTLCeiling caps restored lifetimes so a corrupt snapshot cannot pin data
// for years.
const TTLCeiling = 24 * time.Hour

func decodeAffiliate(b []byte, now time.Time) (snapAffiliate, error) {
	var (
		a               snapAffiliate
		ttl, exp        []byte
		haveTTL, haveEx bool
	)
	err := fields(b, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		if typ != protowire.BytesType {
			return nil
		}
		switch num {
		case 1:
			a.id = string(v)
		case 2:
			exp, haveEx = v, true
		case 3:
			a.data = append([]byte(nil), v...)
		case 4:
			var (
				ep               snapEndpoint
				eTTL, eExp       []byte
				haveETTL, haveEE bool
			)
			if err := fields(v, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
				if typ != protowire.BytesType {
					return nil
				}
				switch num {
				case 1:
					eExp, haveEE = v, true
				case 2:
					ep.data = append([]byte(nil), v...)
				case 3:
					eTTL, haveETTL = v, true
				}
				return nil
			}); err != nil {
				return err
			}
			var err error
			if ep.expires, err = expiry(now, eTTL, eExp, haveETTL, haveEE); err != nil {
				return err
			}
			a.endpoints = append(a.endpoints, ep)
		case 5:
			ttl, haveTTL = v, true
		}
		return nil
	})
	if err != nil {
		return a, err
	}
	a.expires, err = expiry(now, ttl, exp, haveTTL, haveEx)
	return a, err
}

func decodeCluster(b []byte, now time.Time) (snapCluster, error) {
	var c snapCluster
	err := fields(b, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		if typ != protowire.BytesType {
			return nil
		}
		switch num {
		case 1:
			c.id = string(v)
		case 2:
			a, err := decodeAffiliate(v, now)
			if err != nil {
				return err
			}
			c.affiliates = append(c.affiliates, a)
		}
		return nil
	})
	return c, err
}

// readSnapshot streams cluster records from r to fn.
func readSnapshot(r io.Reader, now time.Time, fn func(snapCluster) error) error {
	br := bufio.NewReader(r)
	for {
		tag, err := binaryUvarint(br)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%w: record tag: %v", errSnapshotFormat, err)
		}
		num, typ := protowire.DecodeTag(tag)
		if typ != protowire.BytesType {
			return fmt.Errorf("%w: record field %d has wire type %d, want length-delimited", errSnapshotFormat, num, typ)
		}
		size, err := binaryUvarint(br)
		if err != nil {
			return fmt.Errorf("%w: record length: %v", errSnapshotFormat, noEOF(err))
		}
		if size > maxSnapshotRecord {
			return fmt.Errorf("%w: record of %d bytes is over the limit of %d", errSnapshotFormat, size, maxSnapshotRecord)
		}
		buf := make([]byte, size)
		if _, err := io.ReadFull(br, buf); err != nil {
			return fmt.Errorf("%w: record body: %v", errSnapshotFormat, noEOF(err))
		}
		if num != 1 {
			continue
		}
		c, err := decodeCluster(buf, now)
		if err != nil {
			return err
		}
		if err := fn(c); err != nil {
			return err
		}
	}
}

func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

func binaryUvarint(r io.ByteReader) (uint64, error) {
	var x uint64
	for i := 0; i < 10; i++ {
		b, err := r.ReadByte()
		if err != nil {
			if i > 0 {
				return 0, noEOF(err)
			}
			return 0, err
		}
		x |= uint64(b&0x7f) << (7 * i)
		if b < 0x80 {
			return x, nil
		}
	}
	return 0, errors.New("varint overflows 64 bits")
}

// WriteSnapshot writes the whole store to path atomically: a temporary file
// beside it, fsync, rename, fsync of the directory.
func (m *MemoryStore) WriteSnapshot(path string) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("discovery: snapshot: create %q: %w", tmp, err)
	}
	defer os.Remove(tmp) //nolint:errcheck // gone after a successful rename
	w := bufio.NewWriterSize(f, 64<<10)
	err = m.encode(w)
	if err == nil {
		err = w.Flush()
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("discovery: snapshot: write %q: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("discovery: snapshot: rename to %q: %w", path, err)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync() // best effort: some filesystems refuse directory fsync
		_ = d.Close()
	}
	return nil
}

func (m *MemoryStore) encode(w io.Writer) error {
	now := m.now()
	nowNano := now.UnixNano()
	m.mu.RLock()
	ids := make([]string, 0, len(m.clusters))
	for id := range m.clusters {
		ids = append(ids, id)
	}
	m.mu.RUnlock()
	var buf []byte
	for _, id := range ids {
		c := m.cluster(id, false)
		if c == nil {
			continue
		}
		sc := snapCluster{id: id, affiliates: make([]snapAffiliate, 0, len(c.affiliates))}
		for aid, a := range c.affiliates {
			if a.expires <= nowNano {
				continue
			}
			sa := snapAffiliate{id: aid, data: a.data, expires: time.Unix(0, a.expires)}
			for _, ep := range a.endpoints {
				if ep.expires > nowNano {
					sa.endpoints = append(sa.endpoints, snapEndpoint{data: ep.blob, expires: time.Unix(0, ep.expires)})
				}
			}
			sc.affiliates = append(sc.affiliates, sa)
		}
		c.mu.Unlock()
		if len(sc.affiliates) == 0 {
			continue
		}
		buf = appendClusterRecord(buf[:0], sc, now)
		if _, err := w.Write(buf); err != nil {
			return err
		}
	}
	return nil
}

// RestoreReport says what a snapshot load did.
type RestoreReport struct {
	Restored int // affiliates now in the store
	// Skipped are entries left out because they could never be served: an
	// ID that is not valid UTF-8 (the reference accepts such IDs, but a
	// protobuf string field cannot carry them, so one of them would make
	// every List and Watch of its cluster fail).
	Skipped []SkippedEntry
}

// SkippedEntry names an entry a restore left out, IDs quoted (%q) since they
// are not valid text.
type SkippedEntry struct {
	Cluster, Affiliate string // Affiliate empty: the whole cluster
	Reason             string
}

// LoadSnapshot adds what path holds to the store, dropping what has expired.
// A missing file is not an error (first start). On a damaged file it keeps
// what it read before the damage and reports it with the error.
func (m *MemoryStore) LoadSnapshot(path string) (RestoreReport, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return RestoreReport{}, nil
	}
	if err != nil {
		return RestoreReport{}, fmt.Errorf("discovery: snapshot: open %q: %w", path, err)
	}
	defer f.Close() //nolint:errcheck // read only
	rep, err := m.restore(f)
	if err != nil {
		return rep, fmt.Errorf("discovery: snapshot: read %q: %w", path, err)
	}
	return rep, nil
}

func (m *MemoryStore) restore(r io.Reader) (RestoreReport, error) {
	now := m.now()
	nowNano := now.UnixNano()
	var rep RestoreReport
	const invalidUTF8 = "ID is not valid UTF-8: no client could read it"
	err := readSnapshot(r, now, func(sc snapCluster) error {
		if sc.id == "" || len(sc.id) > m.limits.ClusterIDMax {
			return nil
		}
		if !utf8.ValidString(sc.id) {
			rep.Skipped = append(rep.Skipped, SkippedEntry{Cluster: fmt.Sprintf("%q", sc.id), Reason: "cluster " + invalidUTF8})
			return nil
		}
		c := m.cluster(sc.id, true)
		defer c.mu.Unlock()
		for _, sa := range sc.affiliates {
			exp := sa.expires.UnixNano()
			if exp <= nowNano || sa.id == "" || len(sa.id) > m.limits.AffiliateIDMax || len(sa.data) > m.limits.AffiliateDataMax {
				continue
			}
			if !utf8.ValidString(sa.id) {
				rep.Skipped = append(rep.Skipped, SkippedEntry{Cluster: fmt.Sprintf("%q", sc.id), Affiliate: fmt.Sprintf("%q", sa.id), Reason: "affiliate " + invalidUTF8})
				continue
			}
			if _, ok := c.affiliates[sa.id]; !ok && len(c.affiliates) >= m.limits.AffiliatesPerCluster {
				continue
			}
			a := &memAffiliate{data: sa.data, expires: exp}
			for _, ep := range sa.endpoints {
				ee := ep.expires.UnixNano()
				if ee > nowNano && len(ep.data) <= m.limits.AffiliateEndpointMax && len(a.endpoints) < m.limits.EndpointsPerAffiliate {
					a.endpoints = append(a.endpoints, memEndpoint{blob: ep.data, expires: ee})
				}
			}
			c.affiliates[sa.id] = a
			c.notify(sa.id, a.proto(sa.id, nowNano))
			rep.Restored++
		}
		return nil
	})
	return rep, err
}
