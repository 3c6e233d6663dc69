module component-http/examples/hooks/go-nethttp

go 1.19
