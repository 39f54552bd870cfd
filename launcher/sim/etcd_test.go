package sim

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wideep/wideep-launch/launcher/sim/simtest"
)

func TestPrefixEnd(t *testing.T) {
	tests := map[string]struct{ prefix, want string }{
		"plain":        {"v1/instances/", "v1/instances0"},
		"trailing 255": {"a\xff", "b"},
		"all 255":      {"\xff\xff", "\x00"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			assert.Equal(t, tc.want, prefixEnd(tc.prefix))
		})
	}
}

func TestNewEtcdClientEndpoints(t *testing.T) {
	assert.Equal(t, []string{"http://localhost:2379"}, NewEtcdClient("").Endpoints)
	assert.Equal(t, []string{"http://a:2379", "http://b:2379"}, NewEtcdClient(" http://a:2379/ ,b:2379").Endpoints)
}

func TestEtcdClient(t *testing.T) {
	etcd := simtest.StartEtcd(t)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	// A dead endpoint first: the client moves on to the next one.
	c := NewEtcdClient("http://127.0.0.1:1," + etcd.URL)

	require.NoError(t, c.Put(ctx, "v1/instances/a", []byte(`{"x":1}`), 0))
	require.NoError(t, c.Put(ctx, "v1/other", []byte("no"), 0))
	lease, err := c.Grant(ctx, 5)
	require.NoError(t, err)
	require.NoError(t, c.Put(ctx, "v1/instances/b", []byte("leased"), lease))

	kvs, err := c.GetPrefix(ctx, "v1/instances/")
	require.NoError(t, err)
	require.Len(t, kvs, 2)
	assert.Equal(t, KV{Key: "v1/instances/a", Value: []byte(`{"x":1}`)}, kvs[0])
	assert.Equal(t, KV{Key: "v1/instances/b", Value: []byte("leased"), Lease: lease}, kvs[1])

	ttl, err := c.KeepAlive(ctx, lease)
	require.NoError(t, err)
	assert.Equal(t, int64(5), ttl)

	require.NoError(t, c.Revoke(ctx, lease))
	require.NoError(t, c.Revoke(ctx, lease), "revoking twice is fine")
	_, err = c.KeepAlive(ctx, lease)
	assert.ErrorIs(t, err, ErrLeaseExpired)
	var ee *EtcdError
	assert.ErrorAs(t, c.Put(ctx, "v1/instances/c", []byte("x"), lease), &ee, "put on a revoked lease")

	require.NoError(t, c.Delete(ctx, "v1/instances/a"))
	kvs, err = c.GetPrefix(ctx, "v1/instances/")
	require.NoError(t, err)
	assert.Empty(t, kvs)

	dead := NewEtcdClient("http://127.0.0.1:1")
	dead.HTTP.Timeout = time.Second
	_, err = dead.GetPrefix(ctx, "v1/")
	assert.ErrorContains(t, err, "connection refused")
}
