# The released source-tiny (1.0.0), which regression tests compare each change with. A real
# monorepo pulls released images from a registry; there is none here, so shardci.toml builds
# this one from [[images]] when it is missing: the same script, its release behaviour pinned.
FROM shardci-example/busybox:1
COPY main.sh /connector/main.sh
ENV SOURCE_TINY_VARIANT=v1
ENTRYPOINT ["/bin/sh", "/connector/main.sh"]
