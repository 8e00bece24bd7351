// SPDX-License-Identifier: MIT

package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"time"

	"tailscale.com/derp"
	"tailscale.com/types/key"
)

// quiet is how long a case waits to be sure that nothing else arrives.
const quiet = 500 * time.Millisecond

func caseSendRecv(ctx context.Context, e *env) error {
	ps, err := connectPeers(ctx, e, "A", "B")
	if err != nil {
		return err
	}
	defer closeAll(ps)
	a, b := ps[0], ps[1]
	for _, dir := range [][2]*peer{{a, b}, {b, a}} {
		src, dst := dir[0], dir[1]
		for _, n := range []int{1, 1200, derp.MaxPacketSize} {
			data := plainPacket(n)
			if err := src.c.Send(dst.pub, data); err != nil {
				return fmt.Errorf("%s: send %d bytes to %s: %w", src.name, n, dst.name, err)
			}
			if err := dst.expectPacket(ctx, src, data); err != nil {
				return err
			}
		}
	}
	for _, p := range ps {
		if err := p.expectQuiet(ctx, quiet); err != nil {
			return err
		}
	}
	return nil
}

func caseThree(ctx context.Context, e *env) error {
	ps, err := connectPeers(ctx, e, "C0", "C1", "C2")
	if err != nil {
		return err
	}
	defer closeAll(ps)
	d01, d12 := plainPacket(100), plainPacket(200)
	if err := ps[0].c.Send(ps[1].pub, d01); err != nil {
		return fmt.Errorf("C0: send: %w", err)
	}
	if err := ps[1].c.Send(ps[2].pub, d12); err != nil {
		return fmt.Errorf("C1: send: %w", err)
	}
	if err := ps[1].expectPacket(ctx, ps[0], d01); err != nil {
		return err
	}
	if err := ps[2].expectPacket(ctx, ps[1], d12); err != nil {
		return err
	}
	for _, p := range ps {
		if err := p.expectQuiet(ctx, quiet); err != nil {
			return err
		}
	}
	return nil
}

func casePing(ctx context.Context, e *env) error {
	a, err := connectPeer(ctx, e, "A")
	if err != nil {
		return err
	}
	defer a.close()
	for i := 0; i < 3; i++ {
		start := time.Now()
		if err := a.c.Ping(ctx); err != nil {
			return fmt.Errorf("ping %d: %w", i+1, err)
		}
		if i == 0 {
			fmt.Printf("# ping: first round trip %v\n", time.Since(start).Round(time.Microsecond))
		}
	}
	// derphttp consumes matching pongs; anything left over is a stray.
	return a.expectQuiet(ctx, quiet)
}

// casePeerGone: A and B exchange packets, then B disconnects. A, which has
// received from B, must get PeerGone(B, Disconnected).
func casePeerGone(ctx context.Context, e *env) error {
	ps, err := connectPeers(ctx, e, "A", "B")
	if err != nil {
		return err
	}
	defer closeAll(ps)
	a, b := ps[0], ps[1]
	if err := exchange(ctx, a, b); err != nil {
		return err
	}
	b.close()
	m, err := a.next(ctx)
	if err != nil {
		return fmt.Errorf("A: waiting for PeerGone(B): %w", err)
	}
	pg, ok := m.(derp.PeerGoneMessage)
	if !ok || pg.Peer != b.pub || pg.Reason != derp.PeerGoneReasonDisconnected {
		return fmt.Errorf("A: got %s, want PeerGone(%s, reason 0x00)", describe(m),
			b.pub.ShortString())
	}
	return a.expectQuiet(ctx, quiet)
}

// casePeerGoneScope: PeerGone for a departing peer goes only to clients that
// received packets from it (as Go's derper does), not to clients that only
// sent to it.
func casePeerGoneScope(ctx context.Context, e *env) error {
	ps, err := connectPeers(ctx, e, "A", "B", "S")
	if err != nil {
		return err
	}
	defer closeAll(ps)
	a, b, s := ps[0], ps[1], ps[2]
	if err := exchange(ctx, a, b); err != nil {
		return err
	}
	data := plainPacket(64)
	if err := s.c.Send(b.pub, data); err != nil {
		return fmt.Errorf("S: send: %w", err)
	}
	if err := b.expectPacket(ctx, s, data); err != nil {
		return err
	}
	b.close()
	m, err := a.next(ctx)
	if err != nil {
		return fmt.Errorf("A: waiting for PeerGone(B): %w", err)
	}
	if pg, ok := m.(derp.PeerGoneMessage); !ok || pg.Peer != b.pub {
		return fmt.Errorf("A: got %s, want PeerGone(B)", describe(m))
	}
	if err := s.expectQuiet(ctx, quiet); err != nil {
		return fmt.Errorf("%w (S only sent to B and never received from it)", err)
	}
	return nil
}

// exchange sends one packet each way between a and b.
func exchange(ctx context.Context, a, b *peer) error {
	for _, dir := range [][2]*peer{{a, b}, {b, a}} {
		data := plainPacket(64)
		if err := dir[0].c.Send(dir[1].pub, data); err != nil {
			return fmt.Errorf("%s: send: %w", dir[0].name, err)
		}
		if err := dir[1].expectPacket(ctx, dir[0], data); err != nil {
			return err
		}
	}
	return nil
}

func caseNotHere(ctx context.Context, e *env) error {
	ps, err := connectPeers(ctx, e, "D", "E")
	if err != nil {
		return err
	}
	defer closeAll(ps)
	d, burst := ps[0], ps[1]

	// A non-disco packet to an unknown key is dropped silently.
	if err := d.c.Send(key.NewNode().Public(), plainPacket(100)); err != nil {
		return fmt.Errorf("D: send: %w", err)
	}
	if err := d.expectQuiet(ctx, quiet); err != nil {
		return fmt.Errorf("%w (after a non-disco packet to an unknown key)", err)
	}

	// A disco-looking one gets PeerGone(NotHere).
	unknown := key.NewNode().Public()
	if err := d.c.Send(unknown, discoPacket()); err != nil {
		return fmt.Errorf("D: send: %w", err)
	}
	m, err := d.next(ctx)
	if err != nil {
		return fmt.Errorf("D: waiting for PeerGone(NotHere): %w", err)
	}
	pg, ok := m.(derp.PeerGoneMessage)
	if !ok || pg.Peer != unknown || pg.Reason != derp.PeerGoneReasonNotHere {
		return fmt.Errorf("D: got %s, want PeerGone(%s, reason 0x01)", describe(m),
			unknown.ShortString())
	}

	// Six at once from a fresh client: the server's limiter allows 3.
	targets := map[key.NodePublic]bool{}
	for i := 0; i < 6; i++ {
		k := key.NewNode().Public()
		targets[k] = true
		if err := burst.c.Send(k, discoPacket()); err != nil {
			return fmt.Errorf("E: send %d: %w", i+1, err)
		}
	}
	got := 0
	wctx, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
	defer cancel()
	for {
		m, err := burst.next(wctx)
		if err != nil {
			if wctx.Err() != nil && ctx.Err() == nil {
				break
			}
			return fmt.Errorf("E: %w", err)
		}
		pg, ok := m.(derp.PeerGoneMessage)
		if !ok || !targets[pg.Peer] || pg.Reason != derp.PeerGoneReasonNotHere {
			return fmt.Errorf("E: got %s, want PeerGone(NotHere) for a target", describe(m))
		}
		delete(targets, pg.Peer)
		got++
	}
	fmt.Printf("# nothere: 6 disco sends to unknown keys gave %d PeerGone(NotHere)\n", got)
	if got < 1 || got > 3 {
		return fmt.Errorf("E: %d PeerGone(NotHere) for 6 quick sends, want 1..3", got)
	}
	return nil
}

// caseOrder sends e.packets numbered 200-byte packets from A to B while B
// reads.
func caseOrder(ctx context.Context, e *env) error {
	return streamCase(ctx, e, "order", e.packets, 200, e.window)
}

// caseBulk streams 400 packets of the maximum size (26 MB) from A to B.
func caseBulk(ctx context.Context, e *env) error {
	return streamCase(ctx, e, "bulk", 400, derp.MaxPacketSize, min(e.window, 8))
}

func streamCase(ctx context.Context, e *env, name string, n, size, win int) error {
	ps, err := connectPeers(ctx, e, "A", "B")
	if err != nil {
		return err
	}
	defer closeAll(ps)
	start := time.Now()
	if err := stream(ctx, ps[0], ps[1], n, size, win); err != nil {
		return err
	}
	dur := time.Since(start)
	fmt.Printf("# %s: %d packets of %d bytes in order in %v (%.0f pkt/s, %.1f MB/s, window %d)\n",
		name, n, size, dur.Round(time.Millisecond), float64(n)/dur.Seconds(),
		float64(n*size)/dur.Seconds()/1e6, win)
	return ps[1].expectQuiet(ctx, quiet)
}

// stream sends n numbered packets of size bytes from a to b while b reads and
// checks each one. With a window, b acknowledges every win/2 packets and a
// never has more than win packets unacknowledged. That keeps b's queue on
// the server below its depth (32 in derper, which drops the oldest packet
// beyond that), so any loss is a server bug.
func stream(ctx context.Context, a, b *peer, n, size, win int) error {
	tag := randBytes(8)
	tag[0] = 0
	mk := func(seq int, size int) []byte {
		p := make([]byte, size)
		copy(p, tag)
		binary.BigEndian.PutUint32(p[8:], uint32(seq))
		for i := 12; i < size; i++ {
			p[i] = byte(seq*131 + i)
		}
		return p
	}
	parse := func(m derp.ReceivedMessage, src *peer) (int, []byte, error) {
		rp, ok := m.(derp.ReceivedPacket)
		if !ok || rp.Source != src.pub || len(rp.Data) < 12 ||
			string(rp.Data[:8]) != string(tag) {
			return 0, nil, fmt.Errorf("unexpected %s", describe(m))
		}
		return int(binary.BigEndian.Uint32(rp.Data[8:])), rp.Data, nil
	}

	acks := make(chan int, 64)
	errc := make(chan error, 2)
	if win > 0 {
		go func() {
			for {
				m, err := a.next(ctx)
				if err != nil {
					errc <- fmt.Errorf("A: waiting for acks: %w", err)
					return
				}
				seq, _, err := parse(m, b)
				if err != nil {
					errc <- fmt.Errorf("A: %w", err)
					return
				}
				select {
				case acks <- seq:
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	go func() {
		acked := -1
		for seq := 0; seq < n; seq++ {
			for win > 0 && seq-acked > win {
				select {
				case v := <-acks:
					acked = max(acked, v)
				case <-ctx.Done():
					errc <- fmt.Errorf("A: sent %d, acked %d: %w", seq, acked+1, ctx.Err())
					return
				}
			}
			if err := a.c.Send(b.pub, mk(seq, size)); err != nil {
				errc <- fmt.Errorf("A: send %d: %w", seq, err)
				return
			}
		}
		errc <- nil
	}()

	for want := 0; want < n; want++ {
		m, err := b.next(ctx)
		if err != nil {
			select {
			case serr := <-errc:
				if serr != nil {
					err = fmt.Errorf("%w; %w", err, serr)
				}
			default:
			}
			return fmt.Errorf("B: received %d of %d: %w", want, n, err)
		}
		seq, data, err := parse(m, a)
		if err != nil {
			return fmt.Errorf("B: after %d packets: %w", want, err)
		}
		if seq != want {
			return fmt.Errorf("B: got packet %d, want %d (%d lost or reordered)",
				seq, want, seq-want)
		}
		if !bytes.Equal(data, mk(seq, size)) {
			return fmt.Errorf("B: packet %d corrupted (%d bytes, want %d)",
				seq, len(data), size)
		}
		if win > 0 && ((want+1)%max(win/2, 1) == 0 || want+1 == n) {
			if err := b.c.Send(a.pub, mk(want, 12)); err != nil {
				return fmt.Errorf("B: ack %d: %w", want, err)
			}
		}
	}
	return <-errc
}
