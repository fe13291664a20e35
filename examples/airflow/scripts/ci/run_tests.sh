#!/bin/sh
exec pytest "$@"
