package conf

// WriteTestCerts is writeCerts for the fuzz targets, which are in package
// conf_test.
var WriteTestCerts = writeCerts
