module example.com/gobugs

go 1.22
