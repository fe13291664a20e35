package io.airbyte.cdk;

public interface Destination {}
