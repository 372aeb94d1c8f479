package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func get(t *testing.T, handler http.Handler, path string) (int, string) {
	t.Helper()
	recorder := httptest.NewRecorder()
	handler.ServeHTTP(recorder, httptest.NewRequest(http.MethodGet, path, nil))
	body, _ := io.ReadAll(recorder.Body)
	return recorder.Code, string(body)
}

func TestIndexListsTheItemsFromTheAPI(t *testing.T) {
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, `[{"id":1,"name":"first <item>"}]`)
	}))
	defer api.Close()
	code, body := get(t, frontEnd{api.URL, api.Client()}.routes(), "/")
	if code != http.StatusOK || !strings.Contains(body, "<li>first &lt;item&gt;</li>") {
		t.Fatalf("got %d %q", code, body)
	}
}

func TestIndexReportsAnUnreachableAPI(t *testing.T) {
	api := httptest.NewServer(http.NotFoundHandler())
	defer api.Close()
	code, body := get(t, frontEnd{api.URL, api.Client()}.routes(), "/")
	if code != http.StatusBadGateway || !strings.Contains(body, "API unavailable") {
		t.Fatalf("got %d %q", code, body)
	}
}

func TestHealthAnswersOK(t *testing.T) {
	code, body := get(t, frontEnd{}.routes(), "/healthz")
	if code != http.StatusOK || !strings.Contains(body, `"ok"`) {
		t.Fatalf("got %d %q", code, body)
	}
}
