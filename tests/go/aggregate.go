// What Argo makes of a loop's output parameter, by Go's own encoding/json: for each line of
// stdin (a JSON list of one loop's values, strings), the values as json.Unmarshal reads them into
// `any` if every one is a JSON list or object, else the strings, written by json.Marshal. These
// are the steps of tryJSONUnmarshal and aggregatedJSONValueList in Argo v4.1.2
// (workflow/controller/operator.go); tests/test_argo_rules.py compares
// workflows.argo_rules.aggregate_outputs with this program's output.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
)

func aggregate(values []string) ([]byte, error) {
	parsed := make([]any, 0, len(values))
	for _, value := range values {
		var item any
		if err := json.Unmarshal([]byte(value), &item); err != nil {
			return json.Marshal(values)
		}
		switch item.(type) {
		case []any, map[string]any:
			parsed = append(parsed, item)
		default:
			return json.Marshal(values)
		}
	}
	return json.Marshal(parsed)
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<26)
	for in.Scan() {
		var values []string
		if err := json.Unmarshal(in.Bytes(), &values); err != nil {
			panic(err)
		}
		out, err := aggregate(values)
		if err != nil {
			panic(err)
		}
		fmt.Println(string(out))
	}
	if err := in.Err(); err != nil {
		panic(err)
	}
}
