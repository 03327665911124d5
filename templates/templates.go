// Package templates embeds the files meshspan installs on a node: the
// cloud-init document, the systemd unit, the agent install script and the
// bare-metal bundle script. internal/userdata renders them.
package templates

import "embed"

// FS holds every template in this directory.
//
//go:embed cloud-config.yaml.tmpl meshspan-agent.service install-agent.sh.tmpl bundle.sh.tmpl
var FS embed.FS
