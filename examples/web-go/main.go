// Command web is the example app's front end: one HTML page listing the items that
// the API service holds, plus a health endpoint. Standard library only.
package main

import (
	"encoding/json"
	"fmt"
	"html/template"
	"log"
	"net/http"
	"os"
	"time"
)

// Item is one entry as the API service returns it.
type Item struct {
	ID   int    `json:"id"`
	Name string `json:"name"`
}

var page = template.Must(template.New("page").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>Farm example</title></head>
<body><h1>Items</h1>
{{if .Error}}<p class="error">API unavailable: {{.Error}}</p>{{end}}
<ul>{{range .Items}}<li>{{.Name}}</li>{{end}}</ul>
</body></html>
`))

// frontEnd serves the page, fetching items from the API at apiURL on each request.
type frontEnd struct {
	apiURL string
	client *http.Client
}

func (f frontEnd) routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", health)
	mux.HandleFunc("/", f.index)
	return mux
}

func health(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintln(w, `{"status":"ok"}`)
}

func (f frontEnd) index(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/" {
		http.NotFound(w, r)
		return
	}
	items, err := f.fetchItems()
	data := struct {
		Items []Item
		Error string
	}{Items: items}
	if err != nil {
		data.Error = err.Error()
		w.WriteHeader(http.StatusBadGateway)
	}
	if err := page.Execute(w, data); err != nil {
		log.Printf("render: %v", err)
	}
}

func (f frontEnd) fetchItems() ([]Item, error) {
	resp, err := f.client.Get(f.apiURL + "/api/items")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("API answered %s", resp.Status)
	}
	var items []Item
	err = json.NewDecoder(resp.Body).Decode(&items)
	return items, err
}

func getenv(name, fallback string) string {
	if value := os.Getenv(name); value != "" {
		return value
	}
	return fallback
}

func main() {
	port := getenv("PORT", "8080")
	f := frontEnd{
		apiURL: getenv("API_URL", "http://127.0.0.1:3000"),
		client: &http.Client{Timeout: 3 * time.Second},
	}
	log.Printf("web: listening on :%s, API at %s", port, f.apiURL)
	log.Fatal(http.ListenAndServe(":"+port, f.routes()))
}
