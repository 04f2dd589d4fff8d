module faultline/dumpgen

go 1.21
