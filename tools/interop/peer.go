// SPDX-License-Identifier: MIT

package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"tailscale.com/derp"
	"tailscale.com/derp/derphttp"
	"tailscale.com/types/key"
)

// peer is one derphttp client with a goroutine that reads every message it
// receives into msgs, so that a case can wait for messages with a deadline.
type peer struct {
	name       string
	priv       key.NodePrivate
	pub        key.NodePublic
	c          *derphttp.Client
	msgs       chan derp.ReceivedMessage
	done       chan struct{} // closed when the reader stops; then err is set
	stop       chan struct{} // closed by close()
	err        error
	closing    atomic.Bool
	keepalives atomic.Int64 // KeepAlive frames received
}

// connectPeer connects a client with a new key and checks that the first
// message it receives is ServerInfo.
func connectPeer(ctx context.Context, e *env, name string) (*peer, error) {
	return connectPeerWith(ctx, e, name, key.NewNode(), nil)
}

// connectPeerWith is connectPeer with a given key; setup, if not nil, can
// adjust the client (mesh key, watching) before it connects.
func connectPeerWith(ctx context.Context, e *env, name string, priv key.NodePrivate,
	setup func(*derphttp.Client)) (*peer, error) {
	p := &peer{
		name: name,
		priv: priv,
		msgs: make(chan derp.ReceivedMessage, 1024),
		done: make(chan struct{}),
		stop: make(chan struct{}),
	}
	p.pub = p.priv.Public()
	c, err := e.newClient(p.priv)
	if err != nil {
		return nil, fmt.Errorf("%s: new client: %w", name, err)
	}
	if setup != nil {
		setup(c)
	}
	p.c = c
	if err := c.Connect(ctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("%s: connect: %w", name, err)
	}
	go p.read()
	m, err := p.next(ctx)
	if err != nil {
		p.close()
		return nil, fmt.Errorf("%s: waiting for ServerInfo: %w", name, err)
	}
	si, ok := m.(derp.ServerInfoMessage)
	if !ok {
		p.close()
		return nil, fmt.Errorf("%s: first message is %s, want ServerInfo", name, describe(m))
	}
	// Tailscale clients drop their own packets beyond an advertised rate.
	if si.TokenBucketBytesPerSecond != 0 || si.TokenBucketBytesBurst != 0 {
		p.close()
		return nil, fmt.Errorf("%s: ServerInfo advertises a token bucket (%d B/s, burst %d)",
			name, si.TokenBucketBytesPerSecond, si.TokenBucketBytesBurst)
	}
	return p, nil
}

// connectPeers connects n clients named 0..n-1 (or by names).
func connectPeers(ctx context.Context, e *env, names ...string) ([]*peer, error) {
	var ps []*peer
	for _, n := range names {
		p, err := connectPeer(ctx, e, n)
		if err != nil {
			closeAll(ps)
			return nil, err
		}
		ps = append(ps, p)
	}
	return ps, nil
}

func closeAll(ps []*peer) {
	for _, p := range ps {
		p.close()
	}
}

// read forwards messages until the connection fails. derphttp reconnects
// silently on the next call after an error; a case never wants that, so a
// new connection generation is an error too.
func (p *peer) read() {
	defer close(p.done)
	for {
		m, gen, err := p.c.RecvDetail()
		if err != nil {
			if p.closing.Load() {
				err = errors.New("closed")
			}
			p.err = fmt.Errorf("%s: recv: %w", p.name, err)
			return
		}
		if gen != 1 {
			p.err = fmt.Errorf("%s: client reconnected (connection generation %d)",
				p.name, gen)
			return
		}
		if _, ok := m.(derp.KeepAliveMessage); ok {
			p.keepalives.Add(1)
		}
		if rp, ok := m.(derp.ReceivedPacket); ok {
			// Data aliases the client's read buffer.
			rp.Data = bytes.Clone(rp.Data)
			m = rp
		}
		select {
		case p.msgs <- m:
		case <-p.stop:
			p.err = fmt.Errorf("%s: closed", p.name)
			return
		}
	}
}

// next returns the next message other than KeepAlive.
func (p *peer) next(ctx context.Context) (derp.ReceivedMessage, error) {
	for {
		select {
		case m := <-p.msgs:
			if _, ok := m.(derp.KeepAliveMessage); ok {
				continue
			}
			return m, nil
		case <-p.done:
			// Drain what was read before the reader stopped.
			select {
			case m := <-p.msgs:
				if _, ok := m.(derp.KeepAliveMessage); ok {
					continue
				}
				return m, nil
			default:
			}
			return nil, p.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// expectPacket waits for the next message and requires it to be a packet
// from src with exactly data.
func (p *peer) expectPacket(ctx context.Context, src *peer, data []byte) error {
	m, err := p.next(ctx)
	if err != nil {
		return fmt.Errorf("%s: waiting for %d-byte packet from %s: %w",
			p.name, len(data), src.name, err)
	}
	rp, ok := m.(derp.ReceivedPacket)
	if !ok {
		return fmt.Errorf("%s: got %s, want %d-byte packet from %s",
			p.name, describe(m), len(data), src.name)
	}
	if rp.Source != src.pub {
		return fmt.Errorf("%s: packet source %s, want %s (%s)",
			p.name, rp.Source.ShortString(), src.pub.ShortString(), src.name)
	}
	if !bytes.Equal(rp.Data, data) {
		return fmt.Errorf("%s: packet from %s differs: got %d bytes, want %d",
			p.name, src.name, len(rp.Data), len(data))
	}
	return nil
}

// expectQuiet requires that no message other than KeepAlive arrives for d.
func (p *peer) expectQuiet(ctx context.Context, d time.Duration) error {
	qctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	m, err := p.next(qctx)
	if err == nil {
		return fmt.Errorf("%s: unexpected %s", p.name, describe(m))
	}
	if qctx.Err() != nil && ctx.Err() == nil {
		return nil
	}
	return err
}

// close closes the client and waits (bounded) for its reader to stop.
func (p *peer) close() {
	if p.closing.Swap(true) {
		return
	}
	close(p.stop)
	p.c.Close()
	select {
	case <-p.done:
	case <-time.After(2 * time.Second):
	}
}

// describe names a message for error text; keys are shortened.
func describe(m derp.ReceivedMessage) string {
	switch m := m.(type) {
	case derp.ReceivedPacket:
		return fmt.Sprintf("packet from %s (%d bytes)", m.Source.ShortString(), len(m.Data))
	case derp.PeerGoneMessage:
		return fmt.Sprintf("PeerGone(%s, reason %#02x)", m.Peer.ShortString(), byte(m.Reason))
	case derp.PeerPresentMessage:
		return fmt.Sprintf("PeerPresent(%s)", m.Key.ShortString())
	case derp.ServerInfoMessage:
		return "ServerInfo"
	case derp.PingMessage:
		return "Ping"
	case derp.PongMessage:
		return "unmatched Pong"
	case derp.HealthMessage:
		return fmt.Sprintf("Health(%q)", m.Problem)
	case derp.ServerRestartingMessage:
		return "ServerRestarting"
	case derp.KeepAliveMessage:
		return "KeepAlive"
	}
	return fmt.Sprintf("%T", m)
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// plainPacket is n random bytes that cannot look like disco.
func plainPacket(n int) []byte {
	b := randBytes(n)
	b[0] = 0
	return b
}

var discoMagic = []byte{0x54, 0x53, 0xf0, 0x9f, 0x92, 0xac}

// discoPacket looks like disco to a DERP server: magic, 32-byte sender key,
// 24-byte nonce and a sealed body.
func discoPacket() []byte {
	b := randBytes(len(discoMagic) + 32 + 24 + 16 + 8)
	copy(b, discoMagic)
	return b
}
