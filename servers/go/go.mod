module chatbench/servers/go

go 1.19
