package discovery

import (
	"context"
	"log/slog"
	"slices"
	"sync/atomic"

	"go.uber.org/zap/zapcore"
)

// decryptMessages are the discovery-client log lines that mean a received
// blob did not open or parse with our key. The client only logs them, so
// the bridge counts them; they are demoted to debug because a foreign
// cluster sharing our cluster ID would otherwise flood the log.
var decryptMessages = map[string]bool{
	"short data":                 true,
	"decryption failure":         true,
	"unmarshal failure":          true,
	"endpoint unmarshal failure": true,
	"endpoint size is not multiple of cipher block size": true,
}

// publishFailedMessage is what discovery-client logs when a publish (its
// "refresh") failed; it then waits for new local data (see
// endpointClient.republish).
const publishFailedMessage = "failed refreshing discovery service data"

// slogCore sends discovery-client's zap logs to our slog logger.
type slogCore struct {
	log      *slog.Logger
	fields   []zapcore.Field
	failures *atomic.Uint64
	// publishFailed, if set, is called when a publish failed.
	publishFailed func()
}

func (c *slogCore) Enabled(zapcore.Level) bool { return true }

func (c *slogCore) With(fs []zapcore.Field) zapcore.Core {
	d := *c
	d.fields = append(slices.Clip(c.fields), fs...)
	return &d
}

func (c *slogCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	return ce.AddCore(e, c)
}

func (c *slogCore) Write(e zapcore.Entry, fs []zapcore.Field) error {
	level := slog.LevelDebug
	switch {
	case decryptMessages[e.Message]:
		c.failures.Add(1)
	case e.Message == publishFailedMessage && c.publishFailed != nil:
		c.publishFailed()
		level = slog.LevelWarn
	case e.Level >= zapcore.ErrorLevel:
		// Connection errors: the client retries by itself, so a warning.
		level = slog.LevelWarn
	case e.Level >= zapcore.InfoLevel:
		level = slog.LevelInfo
	}
	if !c.log.Enabled(context.Background(), level) {
		return nil
	}
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range c.fields {
		f.AddTo(enc)
	}
	for _, f := range fs {
		f.AddTo(enc)
	}
	attrs := make([]slog.Attr, 0, len(enc.Fields))
	for k, v := range enc.Fields {
		attrs = append(attrs, slog.Any(k, v))
	}
	c.log.LogAttrs(context.Background(), level, "discovery client: "+e.Message, attrs...)
	return nil
}

func (c *slogCore) Sync() error { return nil }
