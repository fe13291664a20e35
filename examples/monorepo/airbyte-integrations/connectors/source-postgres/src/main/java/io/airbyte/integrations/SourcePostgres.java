package io.airbyte.integrations;

public class SourcePostgres {
  public static void main(String[] args) {}
}
