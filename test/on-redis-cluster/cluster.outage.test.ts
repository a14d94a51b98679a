// The same test, on a local Redis Cluster (3 masters, 3 replicas, REDIS_CLUSTER_NODES) instead of one redis-server.
process.env.SWITCHBOARD_TEST_REDIS = 'cluster'
await import('../cluster.outage.test.js')
