package io.airbyte.integrations;

class SourcePostgresIT {
  @org.junit.jupiter.api.Test
  void readsAndWrites() {}
}
