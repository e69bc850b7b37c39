//go:build race

package wirejson

const raceEnabled = true
