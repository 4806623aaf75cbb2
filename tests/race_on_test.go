//go:build race

package tests

// raceBuild: the tests run under -race, so the daemons are built with it too.
const raceBuild = true
